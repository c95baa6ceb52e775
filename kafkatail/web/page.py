"""The single-page tail UI, shipped as static files in the package."""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, send_from_directory

STATIC = Path(__file__).parent / "static"
bp = Blueprint("kafkatail_page", __name__, static_folder=str(STATIC), static_url_path="/static")


@bp.get("/")
def index():
    return send_from_directory(STATIC, "index.html", max_age=0)
