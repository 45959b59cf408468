"""The realistic JSON endpoint of bench/peers.py for ASGI servers: FastAPI, GET /items?limit=20
(a page of 20 catalogue items validated and serialised through a pydantic response model).
peers_flask.py is the WSGI twin."""

import datetime
from typing import List

from fastapi import FastAPI
from pydantic import BaseModel

from peers_data import page


class Item(BaseModel):
    id: int
    name: str
    description: str
    price: float
    in_stock: bool
    category: str
    tags: List[str]
    created: datetime.datetime


class Page(BaseModel):
    total: int
    limit: int
    offset: int
    items: List[Item]


app = FastAPI()


@app.get("/items", response_model=Page)
async def items(limit: int = 20, offset: int = 0):
    return page(limit, offset)


application = app
