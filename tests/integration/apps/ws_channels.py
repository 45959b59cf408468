"""A Django Channels 4 project in one file for tests/integration/test_websocket_frameworks.py
(libwsgi-epoll vs uvicorn): channels' ProtocolTypeRouter with Django's ASGI app for HTTP and a
URLRouter for WebSocket, no channel layer. Two consumers: a sync WebsocketConsumer (its handlers
run in a worker thread, their sends go back to the loop) and an AsyncWebsocketConsumer. Both echo;
the text "close" closes with a code; the room "denied" is refused before the accept (403); the
disconnect code is reported (ws_common.record)."""

from urllib.parse import parse_qs

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="libwsgi-integration-tests-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        INSTALLED_APPS=[],
        DATABASES={},
        MIDDLEWARE=[],
        USE_TZ=True,
        LOGGING_CONFIG=None,
    )

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi = get_asgi_application()  # sets Django up before channels imports models

from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path, re_path  # noqa: E402

from ws_common import record  # noqa: E402


def home(request):
    return JsonResponse({"framework": "django-channels"})


urlpatterns = [path("", home)]


def token_of(scope):
    return (parse_qs(scope["query_string"].decode()).get("token") or [None])[0]


class SyncEcho(WebsocketConsumer):
    def connect(self):
        room = self.scope["url_route"]["kwargs"]["room"]
        if room == "denied":
            self.close()
            return
        self.accept()
        self.send(text_data="sync room %s" % room)

    def receive(self, text_data=None, bytes_data=None):
        if text_data == "close":
            self.close(code=4004)
        elif text_data is not None:
            self.send(text_data=text_data)
        else:
            self.send(bytes_data=bytes_data)

    def disconnect(self, code):
        record(token_of(self.scope), disconnect={"code": code})


class AsyncEcho(AsyncWebsocketConsumer):
    async def connect(self):
        room = self.scope["url_route"]["kwargs"]["room"]
        if room == "denied":
            await self.close()
            return
        await self.accept()
        await self.send(text_data="async room %s" % room)

    async def receive(self, text_data=None, bytes_data=None):
        if text_data == "close":
            await self.close(code=4005)
        elif text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)

    async def disconnect(self, code):
        record(token_of(self.scope), disconnect={"code": code})


application = ProtocolTypeRouter({
    "http": django_asgi,
    "websocket": URLRouter([
        re_path(r"^ws/sync/(?P<room>\w+)/$", SyncEcho.as_asgi()),
        re_path(r"^ws/async/(?P<room>\w+)/$", AsyncEcho.as_asgi()),
    ]),
})
