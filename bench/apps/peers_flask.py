"""The realistic JSON endpoint of bench/peers.py for WSGI servers: Flask, GET /items?limit=20
(a page of 20 catalogue items, query parsing, jsonify). peers_fastapi.py is the ASGI twin."""

from flask import Flask, jsonify, request

from peers_data import page

app = Flask(__name__)


@app.get("/items")
def items():
    limit = request.args.get("limit", 20, type=int)
    offset = request.args.get("offset", 0, type=int)
    p = page(limit, offset)
    p["items"] = [dict(it, created=it["created"].isoformat()) for it in p["items"]]
    return jsonify(p)


application = app
