# Bootstrap code run once inside the embedded interpreter (compiled into libwsgi as a string).
# It owns what is easiest and clearest in Python and is not on the per-request path: parsing and
# resolving the app spec, interface detection, and traceback formatting.
import ast
import importlib
import inspect
import traceback

# Must match enum wsgi_error in include/libwsgi/common.h.
ERR_APP_SPEC = -10
ERR_MODULE_NOT_FOUND = -11
ERR_IMPORT = -12
ERR_ATTRIBUTE = -13
ERR_NOT_CALLABLE = -14


class LoadError(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.code = code


def parse_spec(spec):
    """'pkg.mod:attr.sub', 'mod:factory(1, x="y")' or 'mod' -> (module, [attrs], args, kwargs)."""
    modname, sep, expr = spec.partition(":")
    modname, expr = modname.strip(), expr.strip()
    if not sep:
        expr = "application"  # gunicorn's default
    if not modname or not all(p.isidentifier() for p in modname.split(".")):
        raise LoadError(ERR_APP_SPEC, f"invalid module name in app spec {spec!r}")
    try:
        node = ast.parse(expr, mode="eval").body
    except SyntaxError:
        raise LoadError(ERR_APP_SPEC, f"invalid attribute expression in app spec {spec!r}") from None
    args = kwargs = None
    if isinstance(node, ast.Call):
        try:
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        except ValueError:
            raise LoadError(ERR_APP_SPEC, f"factory arguments must be literals in {spec!r}") from None
        if None in kwargs:
            raise LoadError(ERR_APP_SPEC, f"**kwargs not allowed in app spec {spec!r}")
        node = node.func
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        raise LoadError(ERR_APP_SPEC, f"app spec {spec!r} must name an attribute")
    names.append(node.id)
    names.reverse()
    return modname, names, args, kwargs


def load_app(spec):
    modname, names, args, kwargs = parse_spec(spec)
    try:
        obj = importlib.import_module(modname)
    except ModuleNotFoundError as e:
        # Missing module or missing parent package: not found. A module that exists but imports
        # something missing is an import error of that module.
        if e.name and (modname == e.name or modname.startswith(e.name + ".")):
            raise LoadError(ERR_MODULE_NOT_FOUND, f"module {modname!r} not found") from e
        raise LoadError(ERR_IMPORT, f"importing {modname!r} failed: {e!r}") from e
    except BaseException as e:
        raise LoadError(ERR_IMPORT, f"importing {modname!r} failed: {e!r}") from e
    path = modname
    for name in names:
        try:
            obj = getattr(obj, name)
        except AttributeError as e:
            raise LoadError(ERR_ATTRIBUTE, f"{path!r} has no attribute {name!r}") from e
        path += ("." if path != modname else ":") + name
    if args is not None:
        if not callable(obj):
            raise LoadError(ERR_NOT_CALLABLE, f"factory {path!r} is not callable")
        try:
            obj = obj(*args, **kwargs)
        except Exception as e:
            raise LoadError(ERR_ATTRIBUTE, f"factory {path}() raised {e!r}") from e
        path += "()"
    if not callable(obj):
        raise LoadError(ERR_NOT_CALLABLE,
                        f"application {path!r} is not callable (it is a {type(obj).__name__})")
    return obj, is_asgi(obj)


def is_asgi(app):
    """ASGI 3: a coroutine function, or an object whose __call__ is one."""
    if inspect.isclass(app):
        return False  # a class is a WSGI app (instantiated per request) or an ASGI 2 factory
    if inspect.iscoroutinefunction(app):
        return True
    call = getattr(app, "__call__", None)
    return inspect.iscoroutinefunction(call)


def format_exc(etype, value, tb):
    return "".join(traceback.format_exception(etype, value, tb)).rstrip("\n")
