"""HTTP and WebSocket blueprints: the tail socket, the JSON API, health checks and the page."""
