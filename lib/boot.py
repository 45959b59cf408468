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


def task_stack(task):
    """Where a suspended task waits, outermost call first: the whole await chain (coroutines,
    generators, async generators), which Task.print_stack() does not follow (asgi_conn_cancel)."""
    lines = ["Stack of %r (most recent call last):" % (task,)]
    obj, seen = task.get_coro(), 0
    while obj is not None and seen < 200:
        seen += 1
        frame = (getattr(obj, "cr_frame", None) or getattr(obj, "gi_frame", None)
                 or getattr(obj, "ag_frame", None))
        if frame is None:
            break
        code = frame.f_code
        lines.append('  File "%s", line %d, in %s' % (code.co_filename, frame.f_lineno, code.co_name))
        obj = (getattr(obj, "cr_await", None) or getattr(obj, "gi_yieldfrom", None)
               or getattr(obj, "ag_await", None))
    return "\n".join(lines)


# ---- ASGI: the host-driven event loop and the lifespan protocol ----------------------------------
import asyncio
import math
import os
import selectors
import sys


def make_loop(wake_fd):
    """A selector loop whose epoll fd the host polls; wake_fd (an eventfd) wakes it from any thread."""
    selector = selectors.EpollSelector()
    loop = asyncio.SelectorEventLoop(selector)
    asyncio.set_event_loop(loop)

    def drain():
        try:
            os.read(wake_fd, 8)
        except BlockingIOError:
            pass

    loop.add_reader(wake_fd, drain)
    return loop, selector.fileno()


def loop_timeout(loop):
    """Milliseconds until the loop needs a turn: 0 now, -1 never (until its fd is readable).

    asyncio has no public "next deadline" API. This function reads loop internals (_ready,
    _scheduled); if they ever disappear it falls back to a 10 ms tick, and test_asgi_loop checks
    that the fallback is not what runs on this Python. asgi_loop.c answers the two common cases
    (callbacks ready: 0, no timer: -1) from the same attributes without calling it."""
    try:
        if loop._ready:
            return 0
        scheduled = loop._scheduled
    except AttributeError:
        return 10
    if not scheduled:
        return -1
    head = scheduled[0]
    if head.cancelled():
        # asyncio drops cancelled timers lazily, at its next turn: look past them, or the host
        # would wake up at a dead deadline (every wait_for leaves one behind).
        live = [h.when() for h in scheduled if not h.cancelled()]
        if not live:
            return -1
        when = min(live)
    else:
        when = head.when()
    delay = when - loop.time()
    return 0 if delay <= 0 else math.ceil(delay * 1000)


def run_once(loop):
    """One non-blocking turn, through public API only: stop() is already queued when the turn's
    select() runs, so it polls with a zero timeout."""
    loop.call_soon(loop.stop)
    loop.run_forever()


class Lifespan:
    """The server side of the ASGI lifespan protocol for one app (like uvicorn's LifespanOn)."""

    def __init__(self, app, loop, log):
        self.app, self.loop, self.log = app, loop, log
        self.state = {}
        self.queue = asyncio.Queue()
        self.started = loop.create_future()  # True complete / str failed / None unsupported
        self.stopped = loop.create_future()  # True complete / str failed
        self.task = None
        self.error = ""
        # Done when the app, past lifespan.shutdown, waits in receive() with nothing queued: no
        # event will ever come (a lifespan loop without a return after shutdown.complete).
        self.idle = loop.create_future()
        self.shutdown_sent = False
        self.ended_by_us = False  # the task was cancelled by shutdown(): not the app's error

    async def receive(self):
        if self.shutdown_sent and self.queue.empty() and not self.idle.done():
            self.idle.set_result(None)
        return await self.queue.get()

    async def send(self, message):
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "lifespan.startup.complete" and not self.started.done():
            self.started.set_result(True)
        elif kind == "lifespan.startup.failed" and not self.started.done():
            self.started.set_result(str(message.get("message", "")))
        elif kind == "lifespan.shutdown.complete" and self.started.done() and not self.stopped.done():
            self.stopped.set_result(True)
        elif kind == "lifespan.shutdown.failed" and self.started.done() and not self.stopped.done():
            self.stopped.set_result(str(message.get("message", "")))
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {message!r}")

    async def main(self):
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"},
                 "state": self.state}
        try:
            await self.app(scope, self.receive, self.send)
        except BaseException as exc:
            if self.ended_by_us and isinstance(exc, asyncio.CancelledError):
                return  # shutdown() ended a task that waited for nothing (see idle)
            if not self.started.done():
                # Raised before answering startup: the app does not speak lifespan (auto mode).
                self.log(6, "ASGI 'lifespan' protocol appears unsupported: "
                            + "".join(traceback.format_exception_only(type(exc), exc)).strip())
                self.started.set_result(None)
            else:
                self.log(3, "ASGI lifespan raised:\n" + format_exc(type(exc), exc, exc.__traceback__))
                self.error = f"{type(exc).__name__}: {exc}"
        finally:
            if not self.started.done():
                self.started.set_result(None)
            if not self.stopped.done():
                self.stopped.set_result(self.error or True)

    async def startup(self):
        self.task = self.loop.create_task(self.main())
        await self.queue.put({"type": "lifespan.startup"})
        return await self.started

    async def shutdown(self):
        if self.task is None or self.task.done() and self.stopped.done():
            return (await self.stopped) if self.stopped.done() else True
        await self.queue.put({"type": "lifespan.shutdown"})
        self.shutdown_sent = True
        await asyncio.wait([self.stopped, self.idle], return_when=asyncio.FIRST_COMPLETED)
        if self.stopped.done():
            result = self.stopped.result()
        else:
            # Given lifespan.shutdown, the app called receive() again without answering: it would
            # wait for good, and so would the worker. Taken as if it had returned without
            # answering (complete, see main), and ended below.
            self.log(4, "ASGI app called receive() again instead of answering lifespan.shutdown: "
                        "ending its lifespan task")
            result = True
        # Let the app finish what it does after answering (up to 30 s), but not wait for a task
        # that only waits in receive() for an event that never comes: that one is cancelled at
        # once, quietly (uvicorn does not wait for the lifespan task at all).
        if not self.task.done():
            await asyncio.wait([self.task, self.idle], timeout=30,
                               return_when=asyncio.FIRST_COMPLETED)
        if not self.task.done():
            if self.idle.done():
                self.ended_by_us = True
            else:
                self.log(4, "ASGI lifespan task still running 30 s after shutdown; cancelling it")
            self.task.cancel()
            await asyncio.wait([self.task], timeout=1)
        return result


# ---- ASGI: requests run without a Task until they need one (asgi_loop.c, "lazy tasks") ----------
#
# libwsgi drives a request's coroutine itself (coro.send) while it does not wait; only when it
# waits, or asks for its task, does it get an asyncio.Task (around a C resumer). Until then
# the task that asyncio.current_task() and all_tasks() must report does not exist: these wrappers
# ask libwsgi to make it (_lazy_task, set by asgi_loop.c while lazy tasks are on) when the running
# loop's current task is None. Installed when this module runs, before any app is imported, and
# rebound in the modules that imported the originals by name before (asyncio's own, for one).
_lazy_task = None


def _install_task_hooks():
    import asyncio.tasks as tasks
    import sys

    orig_current, orig_all = tasks.current_task, tasks.all_tasks
    get_loop = asyncio.get_running_loop

    def current_task(loop=None):
        if loop is None:
            loop = get_loop()
        task = orig_current(loop)
        if task is None and _lazy_task is not None:
            task = _lazy_task(loop)
        return task

    def all_tasks(loop=None):
        if loop is None:
            loop = get_loop()
        if _lazy_task is not None:
            _lazy_task(loop)  # the running request's task, made now, is one of them
        return orig_all(loop)

    swap = {id(orig_current): current_task, id(orig_all): all_tasks}
    for new, old in ((current_task, orig_current), (all_tasks, orig_all)):
        new.__name__, new.__qualname__, new.__doc__ = old.__name__, old.__qualname__, old.__doc__
        new.__module__, new.__wrapped__ = old.__module__, old
    for mod in list(sys.modules.values()):
        d = getattr(mod, "__dict__", None)
        if not isinstance(d, dict):
            continue
        for k, v in list(d.items()):
            if id(v) in swap and (v is orig_current or v is orig_all):
                d[k] = swap[id(v)]
    return orig_current


try:
    _orig_current_task = _install_task_hooks()
except Exception:  # an asyncio without these: requests then get their Task first (asgi_loop.c)
    _orig_current_task = None


async def eager_probe():
    """Run once at loop creation by libwsgi (asgi_loop.c) to check that a task's first step can be
    run eagerly on this Python: it must run inside its own task."""
    return asyncio.current_task()


def _own_step(frame):
    """Whether the coroutine running @frame is being stepped by its task (the loop's current task
    runs it), rather than closed (GeneratorExit thrown in as the coroutine is destroyed)."""
    loop = asyncio._get_running_loop()
    current = _orig_current_task or asyncio.tasks.current_task
    task = current(loop) if loop is not None else None
    return task is not None and getattr(task.get_coro(), "cr_frame", None) is frame


async def run_asgi(app, scope, receive, send, report, *aw):
    """The task body of one ASGI connection: however the app ends (returns, raises synchronously
    or later, returns a non-awaitable, is cancelled), report() hears it here, in the task's last
    step, so the host learns the end in the same loop turn. aw: (what app(scope, receive, send)
    returned,) when libwsgi called it already (lazy tasks: an app that returns no coroutine; None
    included, whose await raises the TypeError to report)."""
    try:
        await (aw[0] if aw else app(scope, receive, send))
    except GeneratorExit as exc:
        if not _own_step(sys._getframe()):
            raise  # thrown in by close(): the task is being destroyed, nothing to report to
        report(exc)  # raised by the app, in a step of its task: an error like any other
    except (KeyboardInterrupt, SystemExit) as exc:
        # asyncio lets these escape the loop; one request must not take the host down.
        err = RuntimeError(f"ASGI app raised {type(exc).__name__}")
        err.__cause__ = exc
        report(err)
    except BaseException as exc:
        report(exc)
    else:
        report(None)
