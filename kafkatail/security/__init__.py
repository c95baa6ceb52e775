"""Who may open a tail: the WebSocket origin check (tokens and topic rules come later)."""
