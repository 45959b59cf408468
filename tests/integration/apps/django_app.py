"""A one-file Django project for the libwsgi-epoll vs gunicorn comparison."""

import hashlib
import json

from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="libwsgi-integration-tests-only",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        INSTALLED_APPS=[],
        DATABASES={},
        USE_TZ=True,
        APPEND_SLASH=False,
        DATA_UPLOAD_MAX_MEMORY_SIZE=None,
        LOGGING_CONFIG=None,
    )

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse, HttpResponseRedirect, JsonResponse, StreamingHttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def json_view(request):
    return JsonResponse({"framework": "django", "items": [1, 2, 3], "text": "h\u00e9llo"})


def query(request):
    return JsonResponse({"args": sorted((k, v) for k in request.GET for v in request.GET.getlist(k)),
                         "path": request.path})


def form(request):
    return JsonResponse({"form": sorted((k, v) for k in request.POST for v in request.POST.getlist(k)),
                         "ctype": request.content_type})


def upload(request):
    f = request.FILES["file"]
    data = f.read()
    return JsonResponse({"name": f.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                         "field": request.POST.get("field")})


def raw(request):
    data = request.body
    return JsonResponse({"size": len(data), "sha256": hashlib.sha256(data).hexdigest()})


def stream(request):
    return StreamingHttpResponse(("line %d\n" % i for i in range(50)), content_type="text/plain")


def error(request):
    raise RuntimeError("django view failed")


def abort(request):
    return HttpResponse(json.dumps({"error": "teapot"}), status=418, content_type="application/json")


def redirect(request):
    return HttpResponseRedirect("/json")


def cookie(request):
    r = HttpResponse("cookies set", content_type="text/plain")
    r.set_cookie("a", "1")
    r.set_cookie("b", "2", httponly=True)
    return r


def _post_only(view):
    def wrapper(request):
        if request.method != "POST":
            return HttpResponse(status=405)
        return view(request)
    return wrapper


urlpatterns = [
    path("json", json_view),
    path("query", query),
    path("form", _post_only(form)),
    path("upload", _post_only(upload)),
    path("raw", _post_only(raw)),
    path("stream", stream),
    path("error", error),
    path("abort", abort),
    path("redirect", redirect),
    path("cookie", cookie),
]

application = get_wsgi_application()
