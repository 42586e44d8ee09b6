#!/usr/bin/env python3
"""Runs the shell commands of README.md, docs/**/*.md and examples/*/README.md as written.

Called by .ci/run on the fresh clone, after the release build of the
workspace and the fuzz step (so `cargo run`, `cargo build` and `cargo fuzz
run` in the blocks find their artifacts built). A command that fails fails
CI. Usage:

    python3 .ci/readme-commands.py [--timeout SECONDS] [FILE.md ...]
    python3 .ci/readme-commands.py --self-test

The rules:

- A block is a fenced code block whose info string is `sh`, `bash` or
  `shell`. Other blocks (`toml`, `hex`, ...) are not commands.
- Each block runs as one script under `bash -e -o pipefail` (the first
  failing command stops it), in a fresh shell at the repository root, in
  a session of its own, stdin from /dev/null, TMPDIR a scratch directory.
  So every block must stand on its own (its own `B=target/release`, its own
  `cd`), as a reader who jumps to that section would type it.
- A block is the README's text, with two exceptions, both listed below and
  nothing else:
  SKIP: lines that are exactly a command .ci/run already runs (the test
  suite); they are replaced by a comment.
  SHRINK: a size the README gives is made smaller where the literal size
  costs real time. Each entry replaces one exact string by the same flag
  with a smaller value, and must occur in its file: an entry that no
  longer matches is an error, so the table cannot go stale.
- A block fails when it exits non-zero (the failing command, its line in
  the markdown and the output are shown), when it runs longer than
  --timeout, or when it leaves a process running: whatever is still in
  its session 2 s after the shell exited is named, killed, and fails the
  block (a reader pasting it would be left with an orphan).
- Every `reproduce: CMD` line a block prints (verity demo, verity-chaos,
  verity-sim) is run too, exactly as printed, under the same rules: it
  must exit 0, and when the line names a schedule, the rerun must print
  the same reproduce line (same command, same schedule hash).
- Cleanup: every process of a block's session is killed; the scratch
  TMPDIR is removed; each `/tmp/NAME` path the blocks spell out that did
  not exist before the run is removed; and files the run added to the
  clone that git does not ignore (e.g. a fuzz run's new corpus entries)
  are removed and listed.
"""

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Lines run elsewhere by .ci/run, skipped here (exact match, whole line).
SKIP = {
    # The test suite: .ci/run's "tests (the README's test command)" step.
    "cargo test --workspace --release",
    # examples/risk-limits/README.md: the example's tests, run by the same step.
    "cargo test --release -p verity-risk-limits        # unit tests; the app on a faulty 3-node simulated cluster, in a real worker killed mid-run, and in its demo on 3 workers under every fault",
}

# (file, exact text in a block, replacement, why). Only sizes change. The
# demo (1,000,000 records), the by-hand runs and the chaos run take seconds
# each at the README's sizes, so they run as written.
SHRINK = [
    (
        "README.md",
        "-max_total_time=30",
        "-max_total_time=5",
        "30 s of fuzzing per run is the README's; CI's fuzz step already "
        "fuzzed every target for FUZZ_SECONDS",
    ),
]

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^`\s]*)")
SHELL_INFO = {"sh", "bash", "shell"}
REPRODUCE = re.compile(r"^\s*reproduce: (.+?)(\s+\(schedule ([0-9a-f]+)\))?\s*$")
TMP_PATH = re.compile(r"/tmp/[A-Za-z0-9._-]+")
GRACE_SECONDS = 2.0


class Block:
    def __init__(self, file, line, text):
        self.file = file  # path relative to the root
        self.line = line  # markdown line of the first command line
        self.text = text

    def where(self):
        return f"{self.file}:{self.line}"


def blocks_of(root, rel):
    """The shell blocks of one markdown file."""
    out = []
    lines = (root / rel).read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, info = m.group(2), m.group(3).lower()
        body, j = [], i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j])
            j += 1
        if info in SHELL_INFO:
            out.append(Block(rel, i + 2, "\n".join(body) + "\n"))
        i = j + 1
    return out


def apply_tables(blocks, files):
    """SKIP and SHRINK applied to the blocks; errors for stale entries."""
    errors = []
    files = {str(f) for f in files}
    for file, old, new, _why in SHRINK:
        if file not in files:
            continue
        hit = False
        for b in blocks:
            if str(b.file) == file and old in b.text:
                b.text = b.text.replace(old, new)
                hit = True
        if not hit:
            errors.append(f"SHRINK entry {old!r} -> {new!r} matches no block of {file}")
    for b in blocks:
        kept = []
        for line in b.text.splitlines():
            if line.strip() in SKIP:
                kept.append(f"# skipped here (run by .ci/run): {line.strip()}")
            else:
                kept.append(line)
        b.text = "\n".join(kept) + "\n"
    return errors


def session_members(sid):
    """Live processes (not zombies) whose session id is sid."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # After "pid (comm) ": state ppid pgrp session ...
        if fields[0] != "Z" and int(fields[3]) == sid:
            try:
                cmd = Path(f"/proc/{d}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                cmd = b"?"
            found.append((int(d), cmd.decode(errors="replace").strip()))
    return found


def kill_session(sid):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        members = session_members(sid)
        if not members:
            return
        for pid, _ in members:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        while session_members(sid) and time.monotonic() < deadline:
            time.sleep(0.05)


def run_script(script, root, env, timeout, label):
    """Runs a bash script in its own session. Returns (ok, output, reason)."""
    proc = subprocess.Popen(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sid = proc.pid
    output = []

    def pump():
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            output.append(line)
            print(f"  | {line}", flush=True)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    reason = None
    try:
        rc = proc.wait(timeout=timeout)
        if rc != 0:
            reason = f"exit {rc}"
    except subprocess.TimeoutExpired:
        reason = f"still running after {timeout} s (timeout)"
        kill_session(sid)
        proc.wait()
    deadline = time.monotonic() + GRACE_SECONDS
    while session_members(sid) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = session_members(sid)
    if left:
        names = "; ".join(f"pid {p}: {c}" for p, c in left)
        print(f"readme-commands: {label} left running: {names}", flush=True)
        if reason is None:
            reason = f"left {len(left)} process(es) running: {names}"
        kill_session(sid)
    reader.join(timeout=10)
    return reason is None, output, reason


def untracked(root):
    try:
        out = subprocess.run(
            ["git", "ls-files", "--others", "--exclude-standard", "-z"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {p for p in out.decode().split("\0") if p}


def run(root, files, timeout):
    blocks = []
    for rel in files:
        blocks.extend(blocks_of(root, rel))
    errors = apply_tables(blocks, files)
    for e in errors:
        print(f"readme-commands: {e}", flush=True)
    if errors:
        return 1

    tmp_paths = sorted({p for b in blocks for p in TMP_PATH.findall(b.text)})
    fresh_tmp = [p for p in tmp_paths if not os.path.lexists(p)]
    before = untracked(root)
    scratch = tempfile.mkdtemp(prefix="readme-commands-")
    env = dict(os.environ, TMPDIR=scratch)
    failures = []
    started = time.monotonic()
    try:
        for n, b in enumerate(blocks, 1):
            print(f"\n--- block {n}/{len(blocks)}: {b.where()}", flush=True)
            for line in b.text.splitlines():
                print(f"  $ {line}", flush=True)
            if all(not l.strip() or l.lstrip().startswith("#") for l in b.text.splitlines()):
                print("  (nothing left to run)", flush=True)
                continue
            # On the failing command: its text and its line in the markdown.
            prologue = (
                f"trap 'echo \"readme-commands: {b.file}:$((LINENO + {b.line - 2})):"
                f" failed (exit $?): $BASH_COMMAND\"' ERR\n"
            )
            t0 = time.monotonic()
            ok, output, reason = run_script(prologue + b.text, root, env, timeout, b.where())
            secs = time.monotonic() - t0
            if not ok:
                print(f"readme-commands: FAIL {b.where()}: {reason} ({secs:.1f} s)", flush=True)
                failures.append(f"{b.where()}: {reason}")
                continue
            print(f"readme-commands: ok {b.where()} ({secs:.1f} s)", flush=True)
            seen = set()
            for line in output:
                m = REPRODUCE.match(line)
                if not m or line.strip() in seen:
                    continue
                seen.add(line.strip())
                cmd, schedule = m.group(1), m.group(3)
                label = f"{b.where()} reproduce"
                print(f"  reproduce, as printed: {cmd}", flush=True)
                t0 = time.monotonic()
                ok, out2, reason = run_script(cmd + "\n", root, env, timeout, label)
                secs = time.monotonic() - t0
                if ok and schedule:
                    again = [REPRODUCE.match(l) for l in out2]
                    if not any(a and a.group(1) == cmd and a.group(3) == schedule for a in again):
                        ok, reason = False, (
                            f"the rerun did not print the same reproduce line "
                            f"(command and schedule {schedule})"
                        )
                if ok:
                    print(f"readme-commands: ok {label} ({secs:.1f} s)", flush=True)
                else:
                    print(f"readme-commands: FAIL {label}: {reason}: {cmd}", flush=True)
                    failures.append(f"{label}: {reason}: {cmd}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for p in fresh_tmp:
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                os.unlink(p)
        after = untracked(root)
        if before is not None and after is not None:
            added = sorted(after - before)
            for p in added:
                try:
                    (root / p).unlink()
                except OSError:
                    pass
            if added:
                print(
                    f"readme-commands: removed {len(added)} file(s) the commands added to the clone"
                    f" (e.g. {', '.join(added[:3])})",
                    flush=True,
                )
    total = time.monotonic() - started
    if failures:
        print(f"\nreadme-commands: {len(failures)} failure(s) in {total:.0f} s:", flush=True)
        for f in failures:
            print(f"  {f}", flush=True)
        return 1
    print(f"\nreadme-commands: {len(blocks)} block(s) passed in {total:.0f} s", flush=True)
    return 0


def default_files(root):
    files = [Path("README.md")]
    files += sorted(p.relative_to(root) for p in (root / "docs").rglob("*.md"))
    files += sorted(p.relative_to(root) for p in (root / "examples").glob("*/README.md"))
    return [f for f in files if (root / f).is_file()]


SELF_TEST_CASES = [
    # (name, markdown, extra args, must pass, text the output must contain,
    #  text it must not contain)
    (
        "a passing block passes",
        "# t\n\n```sh\necho hello\n```\n\n```toml\nnot = 'run'\n```\n",
        [],
        True,
        ["ok fixture.md:4"],
        [],
    ),
    (
        "a failing command fails the run and is named with its line",
        "# t\n\n```sh\necho before\nfalse\necho after-the-failure\n```\n",
        [],
        False,
        ["fixture.md:5: failed (exit 1): false", "FAIL fixture.md:4"],
        ["| after-the-failure"],
    ),
    (
        "a failing command in a second block fails the run",
        "```sh\ntrue\n```\n\n```bash\ngrep -q nothing-like-this /dev/null\n```\n",
        [],
        False,
        ["FAIL fixture.md:6"],
        [],
    ),
    (
        "a block that leaves a process running fails, and the process is killed",
        "```sh\nsleep 300 &\necho $! > leftover.pid\n```\n",
        [],
        False,
        ["left running", "sleep 300"],
        [],
    ),
    (
        "a block over its timeout fails",
        "```sh\nsleep 30\n```\n",
        ["--timeout", "1"],
        False,
        ["timeout"],
        [],
    ),
    (
        "a reproduce line that does not work fails the run",
        "```sh\necho 'reproduce: exit 3'\n```\n",
        [],
        False,
        ["FAIL fixture.md:2 reproduce"],
        [],
    ),
    (
        "a reproduce line must print the same schedule when rerun",
        "```sh\necho 'reproduce: echo \"reproduce: echo  (schedule 00ff)\"  (schedule 00aa)'\n```\n",
        [],
        False,
        ["did not print the same reproduce line"],
        [],
    ),
    (
        "the skipped test command is not run",
        "```sh\ncargo test --workspace --release\n```\n",
        [],
        True,
        ["nothing left to run"],
        [],
    ),
]


def self_test():
    """The runner on fixture markdown: failures must fail it."""
    me = Path(__file__).resolve()
    bad = 0
    for name, md, extra, must_pass, want, unwanted in SELF_TEST_CASES:
        with tempfile.TemporaryDirectory(prefix="readme-selftest-") as d:
            Path(d, "fixture.md").write_text(md)
            t0 = time.monotonic()
            r = subprocess.run(
                [sys.executable, str(me), "--root", d, *extra, "fixture.md"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            secs = time.monotonic() - t0
            pidfile = Path(d, "leftover.pid")
            leftover = int(pidfile.read_text()) if pidfile.exists() else None
        out = r.stdout + r.stderr
        problems = []
        if leftover is not None and Path(f"/proc/{leftover}").exists():
            stat = Path(f"/proc/{leftover}/stat").read_text()
            if stat[stat.rindex(")") + 2] != "Z":
                problems.append(f"the block's process {leftover} is still running")
        if (r.returncode == 0) != must_pass:
            problems.append(f"exit {r.returncode}, expected {'0' if must_pass else 'non-zero'}")
        problems += [f"output lacks {w!r}" for w in want if w not in out]
        problems += [f"output has {u!r}" for u in unwanted if u in out]
        if "timeout" in name and secs > 15:
            problems.append(f"took {secs:.0f} s")
        if problems:
            bad += 1
            print(f"self-test FAIL: {name}: {'; '.join(problems)}\n{out}")
        else:
            print(f"self-test ok: {name}")
    # A SHRINK entry that no longer matches its file is an error.
    with tempfile.TemporaryDirectory(prefix="readme-selftest-") as d:
        Path(d, "README.md").write_text("```sh\necho no fuzz here\n```\n")
        r = subprocess.run(
            [sys.executable, str(me), "--root", d, "README.md"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if r.returncode == 0 or "matches no block" not in r.stdout:
            bad += 1
            print(f"self-test FAIL: a stale SHRINK entry was accepted\n{r.stdout}")
        else:
            print("self-test ok: a stale SHRINK entry is an error")
    if bad:
        print(f"self-test: {bad} case(s) failed")
        return 1
    print("self-test: all cases passed")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="*", help="markdown files (default: README.md, docs/**/*.md, examples/*/README.md)")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--timeout", type=float, default=240, help="seconds per block")
    ap.add_argument("--self-test", action="store_true")
    a = ap.parse_args()
    if a.self_test:
        return self_test()
    root = a.root.resolve()
    files = [Path(f) for f in a.files] or default_files(root)
    return run(root, files, a.timeout)


if __name__ == "__main__":
    sys.exit(main())
