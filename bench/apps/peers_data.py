"""The data behind the JSON endpoint of bench/peers.py (peers_flask.py and peers_fastapi.py):
a catalogue of 200 items; GET /items?limit=N&offset=M returns a page of them."""

import datetime

CATEGORIES = ["books", "garden", "kitchen", "music", "outdoor", "toys"]
ITEMS = [
    {
        "id": i,
        "name": f"Item number {i}",
        "description": f"A fairly ordinary product, the {i}th of the catalogue, described in a sentence.",
        "price": round(3.5 + (i * 7.31) % 200, 2),
        "in_stock": i % 3 != 0,
        "category": CATEGORIES[i % len(CATEGORIES)],
        "tags": [f"tag{i % 7}", f"tag{i % 11}", f"tag{i % 13}"],
        "created": datetime.datetime(2024, 1, 1) + datetime.timedelta(hours=7 * i),
    }
    for i in range(200)
]


def page(limit, offset):
    limit = max(0, min(limit, 100))
    offset = max(0, offset)
    return {"total": len(ITEMS), "limit": limit, "offset": offset,
            "items": ITEMS[offset:offset + limit]}
