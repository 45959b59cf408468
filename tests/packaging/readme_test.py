"""Runs README.md's shell snippets, in order, as a new user would, in a scratch copy of the repository.

    readme_test.py SOURCE_DIR

Every ```sh (or bash, shell) block runs, in one bash session (so an `export` carries over to the
next block) with `set -euo pipefail`, in a copy of SOURCE_DIR's files (git's tracked and untracked,
not ignored: no build directories) and with HOME set to a scratch directory (so
`--prefix ~/.local` stays inside it). Exceptions, each said in the log:

  - a block preceded by `<!-- readme-test: skip: REASON -->` does not run (illustrations that need
    the reader's own project, and the CI's packaging step, which runs on its own);
  - `./scripts/test.sh` does not run: it is the suite this test is part of (recursion);
  - `./scripts/demo.sh` starts a server that runs until Ctrl-C: it runs under
    tests/packaging/serve_check.py with PORT set to a free port, which waits until the port
    accepts a connection, requests / and expects hello.py's "Hello, World!", then stops it.

A snippet that fails (non-zero status) fails the test. Registered as the ctest `readme` when
configured with -DLIBWSGI_TEST_README=ON; the CI runs it after the packaging step."""
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PY = "/usr/bin/python3"
FENCE = re.compile(r"^```(\w*)\s*$")
DIRECTIVE = re.compile(r"^<!--\s*readme-test:\s*(\w+)(?::\s*(.*?))?\s*-->\s*$")


def blocks(readme):
    """Yields (line number, language, directive, reason, lines) for each fenced block."""
    lines = open(readme, encoding="utf-8").read().splitlines()
    i, prev = 0, ""
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                prev = lines[i]
            i += 1
            continue
        start, lang = i + 1, m.group(1)
        i += 1
        body = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        d = DIRECTIVE.match(prev)
        yield start, lang, d.group(1) if d else None, d.group(2) if d else None, body
        prev = ""


def logical_lines(body):
    """Joins backslash-continued lines."""
    out, cur = [], ""
    for line in body:
        if line.rstrip().endswith("\\"):
            cur += line.rstrip()[:-1] + " "
            continue
        out.append(cur + line)
        cur = ""
    if cur:
        out.append(cur)
    return out


def rewrite(line):
    """The command for one line of a run block, and what was done to it (None: as written)."""
    words = line.split("#", 1)[0].split()
    if not words:
        return line, None
    cmd = words[0]
    if cmd in ("./scripts/test.sh", "scripts/test.sh"):
        return ": " + shlex.quote(line), "skipped: the test suite itself (this test is part of it)"
    if cmd in ("./scripts/demo.sh", "scripts/demo.sh"):
        serve = [PY, os.path.join(HERE, "serve_check.py"), "--env", "PORT={port}", "Hello, World!",
                 "--"] + words
        return " ".join(shlex.quote(w) for w in serve), \
            "a server: started with PORT=<free port>, one request against it, then stopped"
    return line, None


def main(argv):
    src = os.path.abspath(argv[1])
    readme = os.path.join(src, "README.md")
    script = ["set -euo pipefail"]
    ran = 0
    for start, lang, directive, reason, body in blocks(readme):
        if lang not in ("sh", "bash", "shell"):
            continue
        where = "README.md:%d" % start
        if directive == "skip":
            print("readme_test: %s skipped: %s" % (where, reason))
            continue
        if directive is not None:
            print("readme_test: FAIL: unknown directive %r before %s" % (directive, where))
            return 1
        for line in logical_lines(body):
            cmd, note = rewrite(line)
            if not line.strip():
                continue
            script.append("printf '\\n=== readme_test: %%s\\n' %s" % shlex.quote(
                "%s: %s%s" % (where, line.strip(), "   [%s]" % note if note else "")))
            script.append(cmd)
            ran += 1
    if ran == 0:
        print("readme_test: FAIL: no shell snippet found in README.md")
        return 1

    tmp = tempfile.mkdtemp(prefix="libwsgi-readme.")
    try:
        repo, home = os.path.join(tmp, "libwsgi"), os.path.join(tmp, "home")
        os.makedirs(home)
        files = subprocess.run(["git", "-C", src, "ls-files", "-z", "-c", "-o", "--exclude-standard"],
                               check=True, capture_output=True).stdout.split(b"\0")
        for f in filter(None, files):
            f = f.decode()
            if not os.path.lexists(os.path.join(src, f)):
                continue  # deleted in the working tree
            os.makedirs(os.path.dirname(os.path.join(repo, f)), exist_ok=True)
            shutil.copy2(os.path.join(src, f), os.path.join(repo, f), follow_symlinks=False)
        env = dict(os.environ, HOME=home)
        for var in ("PKG_CONFIG_PATH", "LD_LIBRARY_PATH", "CMAKE_PREFIX_PATH", "BUILD_DIR", "PORT"):
            env.pop(var, None)
        print("readme_test: running %d commands in %s (HOME=%s)" % (ran, repo, home), flush=True)
        rc = subprocess.run(["bash", "-c", "\n".join(script)], cwd=repo, env=env).returncode
        if rc != 0:
            print("readme_test: FAIL: a README command failed (status %d, see above)" % rc)
            return 1
        print("readme_test: every README command worked")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
