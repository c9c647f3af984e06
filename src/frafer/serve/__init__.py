"""`frafer serve`: the expression model over HTTP (serve/app.py) and in a web page (serve/static/)."""
