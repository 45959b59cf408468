"""ASGI apps for test_asgi_loop: apps that do their own asyncio work on the host-driven loop
(timers, call_later, executor threads, sockets) and apps that block in particular states.
Parameters come from the query string; results are the response body."""
import asyncio
import ctypes
import os
import socket
import threading
import time
from urllib.parse import parse_qs

NOTES = {}


def query(scope):
    return {k: v[0] for k, v in parse_qs(scope["query_string"].decode(), keep_blank_values=True).items()}


async def respond(send, text, status=200):
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": text.encode()})


async def hello(scope, receive, send):
    await respond(send, "hello")


async def sleeper(scope, receive, send):
    """asyncio.sleep(?ms) then respond."""
    ms = int(query(scope)["ms"])
    await asyncio.sleep(ms / 1000)
    await respond(send, "slept %d" % ms)


async def call_later(scope, receive, send):
    """A future resolved by loop.call_later(?ms)."""
    ms = int(query(scope)["ms"])
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_later(ms / 1000, fut.set_result, "later %d" % ms)
    await respond(send, await fut)


def _blocking(event, seconds):
    # Runs on an executor thread: blocks without holding the GIL.
    time.sleep(seconds)
    event.set()
    return threading.current_thread() is not threading.main_thread()


async def executor(scope, receive, send):
    """loop.run_in_executor: completion arrives from another thread via the loop's self-pipe."""
    loop = asyncio.get_running_loop()
    event = threading.Event()
    other = await loop.run_in_executor(None, _blocking, event, 0.02)
    await respond(send, "executor other_thread=%s set=%s" % (other, event.is_set()))


async def connect(scope, receive, send):
    """asyncio.open_connection to 127.0.0.1:?port, one line each way."""
    port = int(query(scope)["port"])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping from asgi\n")
    await writer.drain()
    line = await reader.readline()
    writer.close()
    await writer.wait_closed()
    await respond(send, "got " + line.decode().strip())


async def sock_pair(scope, receive, send):
    """loop.sock_recv / sock_sendall on one end of a socketpair whose other end is ?fd (a dup
    of the test's socket)."""
    fd = int(query(scope)["fd"])
    loop = asyncio.get_running_loop()
    s = socket.socket(fileno=os.dup(fd))
    s.setblocking(False)
    try:
        await loop.sock_sendall(s, b"hello test")
        data = await loop.sock_recv(s, 100)
    finally:
        s.close()
    await respond(send, "pair " + data.decode())


async def wait_for_then_receive(scope, receive, send):
    """asyncio.wait_for with a long timeout that is not needed (its timer is cancelled), then
    waits in receive(): the loop must report nothing scheduled."""
    key = query(scope)["key"]
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "quick")
    result = await asyncio.wait_for(fut, 60)
    handle = loop.call_later(120, lambda: None)
    handle.cancel()
    NOTES[key] = result
    while True:
        event = await receive()
        if event["type"] != "http.request" or not event.get("more_body"):
            break
    event = await receive()  # blocks until disconnect
    await respond(send, "after " + event["type"])


async def gather(scope, receive, send):
    """Several concurrent sub-tasks with timers."""
    n = int(query(scope)["n"])

    async def one(i):
        await asyncio.sleep(0.001 * (i % 5))
        return i

    results = await asyncio.gather(*(one(i) for i in range(n)))
    await respond(send, "sum %d" % sum(results))


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


async def hold_gil(scope, receive, send):
    """Signals ?ready_fd, then blocks in poll(?go_fd) through ctypes.PyDLL, i.e. while holding
    the GIL, for at most 10 s. The test's helper thread calls asgi_loop_wakeup() meanwhile and
    then writes ?go_fd: if wakeup needed the GIL, poll times out instead."""
    q = query(scope)
    ready_fd, go_fd = int(q["ready_fd"]), int(q["go_fd"])
    libc = ctypes.PyDLL(None)  # PyDLL: calls keep the GIL
    libc.write.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t]
    libc.poll.argtypes = [ctypes.POINTER(_PollFd), ctypes.c_ulong, ctypes.c_int]
    libc.write(ready_fd, b"r", 1)
    pfd = _PollFd(go_fd, 1, 0)  # POLLIN
    n = libc.poll(ctypes.byref(pfd), 1, 10000)
    await respond(send, "released" if n == 1 else "timed out (poll returned %d)" % n)


BACKGROUND = []


async def spawn_background(scope, receive, send):
    """Answers at once and leaves a background task scheduled (its first step waits in the loop's
    ready queue), which ends in its first turn."""
    async def later():
        BACKGROUND.append("ran")

    BACKGROUND.append(asyncio.ensure_future(later()))
    await respond(send, "spawned")
