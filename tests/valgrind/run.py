"""Runs every unit test binary of a build under valgrind memcheck (scripts/valgrind.sh).

The tests are those ctest knows with the label unit (their command, environment and working
directory come from `ctest --show-only=json-v1`); entries whose command is not a test binary (the
shell checks of tests/check_exports.sh) are left out. A test fails when its binary fails or when
memcheck finds an invalid access or a definite leak (--error-exitcode) that
tests/valgrind/python.supp does not suppress. Each test's full valgrind log is kept in
BUILD/valgrind/NAME.log; a failing one is printed. Usage: run.py BUILD_DIR [JOBS [CTEST_REGEX]]
"""

import concurrent.futures
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VG_ERROR = 99  # valgrind's exit status when it found errors (--error-exitcode)


def valgrind_argv(log):
    argv = ["valgrind", "--tool=memcheck", "--leak-check=full", "--show-leak-kinds=definite",
            "--errors-for-leak-kinds=definite", "--error-exitcode=%d" % VG_ERROR,
            "--num-callers=40", "--track-origins=no", "--log-file=" + log,
            "--suppressions=" + os.path.join(HERE, "python.supp")]
    if os.path.exists("/usr/lib/valgrind/python3.supp"):  # Debian's copy of CPython's own list
        argv.append("--suppressions=/usr/lib/valgrind/python3.supp")
    return argv


def unit_tests(build, regex=None):
    argv = ["ctest", "--test-dir", build, "--show-only=json-v1", "-L", "unit"]
    if regex:
        argv += ["-R", regex]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    tests = []
    for t in json.loads(out)["tests"]:
        props = {p["name"]: p["value"] for p in t.get("properties", [])}
        cmd = t["command"]
        if not cmd or not os.path.basename(cmd[0]).startswith("test_"):
            continue  # a shell check, not a test binary
        env = dict(os.environ)
        for kv in props.get("ENVIRONMENT", []):
            k, _, v = kv.partition("=")
            env[k] = v
        tests.append({"name": t["name"], "cmd": cmd, "env": env,
                      "cwd": props.get("WORKING_DIRECTORY", build),
                      # valgrind is 20-50x slower than the test's own bound assumes
                      "timeout": max(float(props.get("TIMEOUT", 300)), 300) * 4})
    return tests


def run(t, logdir):
    log = os.path.join(logdir, t["name"] + ".log")
    start = time.monotonic()
    try:
        p = subprocess.run(valgrind_argv(log) + t["cmd"], env=t["env"], cwd=t["cwd"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=t["timeout"])
        rc, out = p.returncode, p.stdout
    except subprocess.TimeoutExpired as e:
        rc, out = "timeout", (e.stdout or b"").decode("utf-8", "replace") if isinstance(
            e.stdout, bytes) else (e.stdout or "")
    return t["name"], rc, out, log, time.monotonic() - start


def main():
    build = os.path.abspath(sys.argv[1])
    jobs = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    logdir = os.path.join(build, "valgrind")
    os.makedirs(logdir, exist_ok=True)
    tests = unit_tests(build, sys.argv[3] if len(sys.argv) > 3 else None)
    if not tests:
        sys.exit("no unit tests found in %s" % build)
    failed = []
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        for name, rc, out, log, secs in pool.map(lambda t: run(t, logdir), tests):
            what = {0: "ok", VG_ERROR: "MEMCHECK ERRORS"}.get(rc, "FAILED (%s)" % rc)
            print("%-32s %-18s %6.1f s   %s" % (name, what, secs, log), flush=True)
            if rc != 0:
                failed.append(name)
                print(out[-4000:])
                with open(log, errors="replace") as f:
                    print(f.read()[-20000:])
    print("valgrind memcheck: %d of %d unit tests clean" % (len(tests) - len(failed), len(tests)))
    if failed:
        print("failed: " + " ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    main()
