"""A one-file Django project served through ASGI (django.core.asgi) for the libwsgi-epoll vs
uvicorn comparison. It reuses the views of django_app.py (the WSGI one) and adds the ASGI-specific
routes. Django does not speak lifespan: both servers carry on without it."""

import json

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="libwsgi-integration-tests-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.middleware.common.CommonMiddleware", __name__ + ".TeapotMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
        APPEND_SLASH=False,
        DATA_UPLOAD_MAX_MEMORY_SIZE=None,
        LOGGING_CONFIG=None,
    )

from django.http import JsonResponse  # noqa: E402

from asgi_fw_common import FILE, TeapotError  # noqa: E402


class TeapotMiddleware:
    """The custom exception handler: TeapotError becomes a 418."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exc):
        if isinstance(exc, TeapotError):
            return JsonResponse({"error": "teapot", "detail": str(exc)}, status=418)
        return None


import django_app as base  # noqa: E402  (its settings.configure() is skipped: ours came first)
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import FileResponse, Http404, HttpResponseBadRequest  # noqa: E402
from django.urls import path  # noqa: E402


def item(request, item_id):
    return JsonResponse({"item_id": item_id, "q": request.GET.get("q"), "tags": request.GET.getlist("tags")})


def jsonbody(request):
    if request.method != "POST":
        return JsonResponse({}, status=405)
    try:
        data = json.loads(request.body)
    except ValueError:
        return HttpResponseBadRequest("invalid JSON")
    return JsonResponse({"received": data, "total": data.get("count", 0) * 2})


def file(request):
    return FileResponse(open(FILE, "rb"), content_type="application/octet-stream", filename="data.bin")


def custom_error(request):
    raise TeapotError("short and stout")


def http_error(request):
    raise Http404("no such thing")


urlpatterns = base.urlpatterns + [
    path("items/<int:item_id>", item),
    path("jsonbody", jsonbody),
    path("file", file),
    path("custom-error", custom_error),
    path("http-error", http_error),
]

application = get_asgi_application()
