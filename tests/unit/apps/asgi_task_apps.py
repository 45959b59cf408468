"""ASGI apps for test_asgi_task: what an app sees of its task, whether its first step runs inside
asgi_dispatch (asgi_loop_set_eager) or at the next loop turn - current_task() and its identity
across the first real wait, contextvars, cancellation, timeouts, exceptions before and after the
first wait, async generators, anyio cancel scopes.

Apps leave notes in NOTES[key] (key from the query string "key=..."); the test reads them back
with a later request to `report` (GET /<key>)."""
import asyncio
import contextvars
from urllib.parse import parse_qs

NOTES = {}
TASKS = {}
EVENTS = {}
VAR = contextvars.ContextVar("libwsgi_test_var", default="unset")


def note(key, text):
    NOTES.setdefault(key, []).append(str(text))


def query(scope):
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode(), keep_blank_values=True).items()}


async def respond(send, status=200, body=b""):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def report(scope, receive, send):
    await respond(send, 200, "\n".join(NOTES.get(scope["path"][1:], [])).encode())


async def hello(scope, receive, send):
    await respond(send, 200, b"hello")


async def identity(scope, receive, send):
    """current_task() is one real Task from the first line to the last, across a future resolved
    by a later turn, a bare yield (sleep(0)) and a timer; the loop runs meanwhile."""
    key = query(scope)["key"]
    loop = asyncio.get_running_loop()
    first = asyncio.current_task()
    note(key, "task %s, a Task %s, running %s, registered %s, coro %s" % (
        type(first).__name__, isinstance(first, asyncio.Task), loop.is_running(),
        first in asyncio.all_tasks(), asyncio.iscoroutine(first.get_coro())))
    await receive()
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 1)
    await fut
    note(key, "after a future: same %s" % (asyncio.current_task() is first))
    await asyncio.sleep(0)
    note(key, "after sleep(0): same %s" % (asyncio.current_task() is first))
    await asyncio.sleep(0.001)
    note(key, "after a timer: same %s, done %s" % (asyncio.current_task() is first, first.done()))
    await respond(send, 200, b"ok")


async def ctxvar(scope, receive, send):
    """Each request runs in its own copy of the context: it starts with the loop thread's value
    and its own set() is seen only by itself, before and after a wait."""
    q = query(scope)
    key = q["key"]
    note(key, "start " + VAR.get())
    VAR.set(q["value"])
    await asyncio.sleep(0)
    note(key, "after a wait " + VAR.get())
    await respond(send, 200, VAR.get().encode())


async def blocker(scope, receive, send):
    """Waits for an event nobody sets, until its task is cancelled (by `canceller`)."""
    key = query(scope)["key"]
    TASKS[key] = asyncio.current_task()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        note(key, "cancelled")
        raise
    note(key, "not cancelled")


async def canceller(scope, receive, send):
    """Cancels the task of the `blocker` request with the same key."""
    key = query(scope)["key"]
    task = TASKS.pop(key)
    note(key, "cancel() -> %s" % task.cancel())
    await respond(send, 200, b"cancelled")


async def timeouts(scope, receive, send):
    """asyncio.timeout (which needs current_task()) entered in the first step, and wait_for."""
    key = query(scope)["key"]
    try:
        async with asyncio.timeout(0.005):
            await asyncio.Event().wait()
        note(key, "timeout: not reached")
    except TimeoutError:
        note(key, "timeout: TimeoutError")
    try:
        await asyncio.wait_for(asyncio.Event().wait(), 0.005)
        note(key, "wait_for: not reached")
    except asyncio.TimeoutError:
        note(key, "wait_for: TimeoutError")
    try:
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
        note(key, "unexpired timeout: fine")
    except TimeoutError:
        note(key, "unexpired timeout: TimeoutError")
    await respond(send, 504, b"timed out")


async def raise_at_once(scope, receive, send):
    """Raises in the first step, before any wait."""
    raise ValueError("libwsgi-test raised before any wait")


async def raise_after_wait(scope, receive, send):
    """Raises after a real wait, before responding."""
    await asyncio.sleep(0.001)
    raise ValueError("libwsgi-test raised after a wait")


async def raise_after_start(scope, receive, send):
    """Sends the head and a first piece, waits, then raises: the response is cut."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"part", "more_body": True})
    await asyncio.sleep(0)
    raise ValueError("libwsgi-test raised after the head")


async def agen_left_open(scope, receive, send):
    """An async generator first iterated in the first step and dropped unfinished: the loop's
    finalizer hook must close it (its finally awaits, so it cannot be closed synchronously)."""
    key = query(scope)["key"]

    async def gen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)
            note(key, "agen closed by the loop")

    g = gen()
    note(key, "first item %d" % await g.__anext__())
    del g
    await respond(send, 200, b"ok")


async def anyio_scopes(scope, receive, send):
    """anyio's cancel scopes find the host task through current_task() in the first step."""
    import anyio
    key = query(scope)["key"]
    with anyio.CancelScope() as cs:
        cs.cancel()
        await anyio.sleep(0)
        note(key, "cancelled scope: not reached")
    note(key, "cancel scope: cancelled %s" % cs.cancel_called)
    with anyio.move_on_after(0.005) as cs:
        await anyio.sleep(5)
    note(key, "move_on_after: %s" % cs.cancel_called)
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 0)
    note(key, "task group: done")
    await respond(send, 200, b"ok")


async def stop_loop(scope, receive, send):
    """loop.stop() in a request: under run_forever it ends the current run; in a host-driven turn
    it ends that turn only, and the loop goes on driving this task and the others."""
    key = query(scope)["key"]
    asyncio.get_running_loop().stop()
    await asyncio.sleep(0)
    note(key, "after stop(): running %s" % asyncio.get_running_loop().is_running())
    await asyncio.sleep(0.001)
    await respond(send, 200, b"stopped")


async def with_lifespan(scope, receive, send):
    """A lifespan that answers startup and shutdown; requests report the state it set."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                scope["state"]["started"] = "yes"
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await asyncio.sleep(0)
    await respond(send, 200, scope["state"].get("started", "no").encode())


async def patch_call_soon(scope, receive, send):
    """Puts a wrapper around the running loop's call_soon on the loop instance (as monitoring
    tools do), or (?undo=1) takes it away and reports how many calls it saw and whether it was
    still in place."""
    key = query(scope)["key"]
    loop = asyncio.get_running_loop()
    if query(scope).get("undo"):
        w = loop.__dict__.pop("call_soon", None)
        note(key, "still patched %s, calls seen %s" % (w is not None and getattr(w, "ours", False),
                                                       EVENTS.get(key, 0) > 0))
    else:
        real = loop.call_soon

        def wrapper(*args, **kwargs):
            EVENTS[key] = EVENTS.get(key, 0) + 1
            return real(*args, **kwargs)

        wrapper.ours = True
        loop.call_soon = wrapper
    await respond(send, 200, b"ok")


async def set_task_factory(scope, receive, send):
    """Sets a task factory on the running loop that counts the tasks it makes (as Sentry's
    AsyncioIntegration and other monitoring tools do), or (?undo=1) removes it and reports how
    many request tasks (run_asgi's) it made."""
    key = query(scope)["key"]
    loop = asyncio.get_running_loop()
    if query(scope).get("undo"):
        loop.set_task_factory(None)
        note(key, "request tasks made by the factory: %d" % EVENTS.get(key, 0))
    else:
        def factory(loop, coro, **kwargs):
            if getattr(coro, "__qualname__", "") == "run_asgi":
                EVENTS[key] = EVENTS.get(key, 0) + 1
            return asyncio.Task(coro, loop=loop, **kwargs)

        loop.set_task_factory(factory)
    await respond(send, 200, b"ok")


# ---- the task of a request that starts without one (lazy tasks, asgi_loop.c) ----------------------
# With eager start a request runs without a Task until it waits or asks for it; these apps ask for
# it in the first step and then end, cancel themselves or yield something odd. Either way they
# must see what a Task-started request sees.


async def task_without_wait(scope, receive, send):
    """Asks for its task (current_task, all_tasks) and ends without ever waiting."""
    key = query(scope)["key"]
    t = asyncio.current_task()
    TASKS[key] = t
    note(key, "a Task %s, same again %s, in all_tasks %s, done %s" % (
        isinstance(t, asyncio.Task), asyncio.current_task() is t, t in asyncio.all_tasks(),
        t.done()))
    await respond(send, 200, b"ok")


async def task_state(scope, receive, send):
    """Reports how the task `task_without_wait` (or `cancel_self_and_return`) kept ended."""
    key = query(scope)["key"]
    t = TASKS.pop(key)
    note(key, "done %s, cancelled %s, result %s" % (
        t.done(), t.cancelled(), None if t.cancelled() else t.result()))
    await respond(send, 200, b"ok")


async def cancel_self_first(scope, receive, send):
    """Cancels its own task before its first wait: that wait raises CancelledError, and what it
    waited on is cancelled, as for any Task."""
    key = query(scope)["key"]
    fut = asyncio.get_running_loop().create_future()
    note(key, "cancel() -> %s" % asyncio.current_task().cancel())
    try:
        await fut
        note(key, "not cancelled")
    except asyncio.CancelledError:
        note(key, "CancelledError at the first wait, its future cancelled %s" % fut.cancelled())
        asyncio.current_task().uncancel()
    await asyncio.sleep(0)
    note(key, "then waits normally")
    await respond(send, 200, b"ok")


async def cancel_self_and_return(scope, receive, send):
    """Cancels its own task and returns without waiting: the response is complete, the task ends
    cancelled."""
    key = query(scope)["key"]
    TASKS[key] = asyncio.current_task()
    TASKS[key].cancel()
    await respond(send, 200, b"ok")


async def bad_yield(scope, receive, send):
    """Yields a value no Task accepts, as its first wait: the Task throws RuntimeError in."""
    import types
    key = query(scope)["key"]

    @types.coroutine
    def odd():
        yield 5

    try:
        await odd()
    except RuntimeError as e:
        note(key, "RuntimeError: %s" % e)
    await respond(send, 200, b"ok")


async def wait_once(scope, receive, send):
    """Waits once, then responds: the task it is given then (lazy tasks) is current_task()."""
    await asyncio.sleep(0)
    key = query(scope).get("key")
    if key:
        t = asyncio.current_task()
        note(key, "after the wait: a Task %s, in all_tasks %s" % (
            isinstance(t, asyncio.Task), t in asyncio.all_tasks()))
    await respond(send, 200, b"ok")


def _count_tasks():
    """Counts the Tasks asyncio registers from now on (Task.__init__ calls .add on a WeakSet:
    _all_tasks on 3.11, _scheduled_tasks on 3.12; 3.13 links them in C: not countable)."""
    import asyncio.tasks as tasks
    import sys
    ws = {(3, 11): "_all_tasks", (3, 12): "_scheduled_tasks"}.get(sys.version_info[:2])
    ws = getattr(tasks, ws, None) if ws else None
    if ws is None:
        EVENTS["tasks"] = "unknown"
        return
    if not getattr(ws, "libwsgi_counting", False):
        real = ws.add

        def add(item):
            EVENTS["tasks"] = EVENTS.get("tasks", 0) + 1
            return real(item)

        ws.add = add
        ws.libwsgi_counting = True


async def tasks_made(scope, receive, send):
    """?start=1: count Task registrations from now; else report the count since then."""
    if query(scope).get("start"):
        EVENTS["tasks"] = 0
        _count_tasks()
        await respond(send, 200, b"counting")
    else:
        await respond(send, 200, str(EVENTS.get("tasks", 0)).encode())


class _AwaitableResponse:
    """Not a coroutine: an object with __await__ (what some ASGI wrappers return)."""

    def __init__(self, send, key):
        self.send, self.key = send, key

    def __await__(self):
        return self._run().__await__()

    async def _run(self):
        await asyncio.sleep(0)
        t = asyncio.current_task()
        note(self.key, "awaitable object: in a Task %s" % isinstance(t, asyncio.Task))
        await respond(self.send, 200, b"awaited")


def awaitable_object(scope, receive, send):
    """A plain function returning an awaitable object that is not a coroutine."""
    return _AwaitableResponse(send, query(scope)["key"])


def raises_in_call(scope, receive, send):
    """A plain function that raises before returning anything."""
    raise ValueError("libwsgi-test raised in the call")


async def introspect_after_wait(scope, receive, send):
    """Its Task, made at its first wait, shows this coroutine: repr, get_stack(), get_coro()'s
    code; the Task it kept in a local is released once it is done."""
    import weakref
    key = query(scope)["key"]
    await asyncio.sleep(0)
    t = asyncio.current_task()
    names = [f.f_code.co_name for f in t.get_stack()]
    coro = t.get_coro().cr_code.co_name
    note(key, "stack has the app %s, coro %s, in the repr %s" % (
        "introspect_after_wait" in names, coro, coro + "()" in repr(t)))
    EVENTS[key] = weakref.ref(t)
    await respond(send, 200, b"ok")


async def collected(scope, receive, send):
    """After gc.collect(): whether the task `introspect_after_wait` kept a weak reference to is gone."""
    import gc
    key = query(scope)["key"]
    gc.collect()
    note(key, "task collected %s" % (EVENTS.pop(key)() is None))
    await respond(send, 200, b"ok")


async def cancel_self_then_await_task(scope, receive, send):
    """Cancels its own task before its first wait, which is on another Task (or a gather()):
    as for any Task, that one is cancelled and the await raises CancelledError once it has ended
    (Task.cancel() does not end a Task at once)."""
    key = query(scope)["key"]
    if query(scope).get("gather"):
        inner = asyncio.gather(asyncio.sleep(5), asyncio.sleep(5))
    else:
        inner = asyncio.get_running_loop().create_task(asyncio.sleep(5))
    asyncio.current_task().cancel()
    try:
        await inner
        note(key, "not cancelled")
    except asyncio.CancelledError:
        note(key, "CancelledError, what it awaited done %s" % inner.done())
        asyncio.current_task().uncancel()
    except BaseException as e:
        note(key, "%s: %s" % (type(e).__name__, e))
    await respond(send, 200, b"ok")


def returns_none(scope, receive, send):
    """A plain function that returns None, which is not awaitable."""
    return None


def task_in_call(scope, receive, send):
    """A plain function (an ASGI wrapper) that asks for its task before returning the coroutine:
    the same Task as the coroutine's, as when the call runs inside the Task (run_asgi)."""
    key = query(scope)["key"]
    t = asyncio.current_task()
    note(key, "in the call: a Task %s" % isinstance(t, asyncio.Task))

    async def body():
        same_first = asyncio.current_task() is t
        if query(scope).get("wait"):
            await asyncio.sleep(0)
        note(key, "in the coroutine: same %s, after a wait %s" % (
            same_first, asyncio.current_task() is t))
        await respond(send, 200, b"ok")

    if query(scope).get("obj"):  # an awaitable object that is not a coroutine
        return _Awaiting(body())
    return body()


class _Awaiting:
    def __init__(self, coro):
        self.coro = coro

    def __await__(self):
        return self.coro.__await__()


async def cancel_self_then_sleep0(scope, receive, send):
    """Cancels its own task, then its first wait is a bare yield (sleep(0)), which cannot be
    cancelled: the Task throws CancelledError in at its next step, as for any Task."""
    key = query(scope)["key"]
    asyncio.current_task().cancel()
    try:
        await asyncio.sleep(0)
        note(key, "not cancelled")
    except asyncio.CancelledError:
        note(key, "CancelledError at sleep(0)")
        asyncio.current_task().uncancel()
    await respond(send, 200, b"ok")


async def raises_generator_exit(scope, receive, send):
    """Raises GeneratorExit itself (?wait=1: after a wait, in a later step of its task): an
    application error like any other (a 500, as uvicorn answers), not the task being destroyed;
    ?obj=1: the same from an awaitable object that is not a coroutine (run_asgi awaits it)."""
    if query(scope).get("wait"):
        await asyncio.sleep(0)
    raise GeneratorExit


def raises_generator_exit_obj(scope, receive, send):
    """raises_generator_exit, returned as an awaitable object that is not a coroutine."""
    return _Awaiting(raises_generator_exit(scope, receive, send))


async def stop_no_wait(scope, receive, send):
    """loop.stop() in a request that never waits (with eager start: inside asgi_dispatch), then
    a response: it ends that step only, not the lifespan's run of the loop that comes next."""
    asyncio.get_running_loop().stop()
    await respond(send, 200, b"stopped")


async def lifespan_after_stop(scope, receive, send):
    """with_lifespan under another name (its startup runs once per app)."""
    await with_lifespan(scope, receive, send)
