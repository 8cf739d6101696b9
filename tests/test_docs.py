"""The README and docs/ as a reader meets them: the README fits on a page and links every docs page, every relative
link lands on a file (and an anchor on a heading of it), no table cell runs past MAX_CELL characters, and every
`fersweep` command in a bash block that runs on the built-in data within seconds exits 0. The other documented
commands (a real data set, Ray, minutes of training, a sweep's results) are not run: each is parsed by fersweep's own
parser, its sweep file or trial config validated, and the reason it is not run is stated by why_not_run."""
import re
import shlex
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest

from fercore.cli import main

REPO_ROOT = Path(__file__).resolve().parent.parent
README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

MAX_README_LINES = 150  # a page
MAX_CELL = 300  # characters in one table cell: longer text goes in a list or prose below the table
COMMAND_TIMEOUT_S = 180  # seconds; a command that runs here takes 0.1-20 s on a busy 2-core machine, cold caches
MIN_COMMANDS_RUN = 4
TINY_SCALE = 0.02  # `fersweep trial` at data.scale <= this (540 faces at 0.015) runs in seconds; larger takes minutes
DATA_INFO_SCALE = 0.1  # `fersweep data info procedural` up to this scale (fersweep's default) runs in seconds

NO_RULE = "no rule in why_not_run for `fersweep "

FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
AUTOLINK = re.compile(r"<(https?://[^>\s]+)>")
CODE_SPAN = re.compile(r"(`+)(?:.|\n)*?(?<!`)\1(?!`)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
CELL_SEPARATOR = re.compile(r"(?<!\\)\|")  # GitHub splits a row on every unescaped |, code spans included


def rel(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, line) of PATH outside fenced code blocks."""
    out, fenced = [], False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            out.append((n, line))
    return out


def code_blocks(path: Path) -> list[tuple[str, int, list[str]]]:
    """(info string, first line number, lines) of each fenced code block of PATH."""
    blocks, current = [], None
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            if current is None:
                current = (line.strip().strip("`~").strip().lower(), n + 1, [])
            else:
                blocks.append(current)
                current = None
        elif current is not None:
            current[2].append(line)
    return blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped but for '-' and '_', each space a '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading anchors on its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of PATH; a repeated heading's second anchor gets -1, its third -2 (as GitHub does)."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose_lines(path):
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            out.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return out


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link and image in PATH's prose (not in code spans or blocks)."""
    found = []
    for n, line in prose_lines(path):
        line = CODE_SPAN.sub("", line)
        found += [(n, m.group(1)) for m in LINK.finditer(line)]
        found += [(n, m.group(1)) for m in AUTOLINK.finditer(line)]
    return found


def link_problem(page: Path, target: str) -> str | None:
    """Why TARGET, a link on PAGE, leads nowhere, or None."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
        url = urlparse(target)
        if url.scheme not in ("http", "https") or not url.netloc or " " in target:
            return "not a well-formed http(s) URL (only http and https links, checked offline)"
        return None
    path_part, _, anchor = target.partition("#")
    file = (page.parent / path_part).resolve() if path_part else page
    if not file.exists():
        return f"{path_part} does not exist"
    if REPO_ROOT not in file.parents and file != REPO_ROOT:
        return f"{path_part} is outside the repository"
    if anchor:
        if file.suffix != ".md":
            return f"#{anchor} on a file that is not Markdown"
        if anchor not in anchors(file):
            return f"#{anchor} is no heading of {rel(file)} (its anchors: {', '.join(sorted(anchors(file)))})"
    return None


def table_cells(path: Path) -> list[tuple[int, str]]:
    """(line number, cell) of every table cell in PATH's prose (a table row's line starts with |, maybe indented)."""
    out = []
    for n, line in prose_lines(path):
        row = line.strip()
        if row.startswith("|"):
            row = row[1:-1] if row.endswith("|") and not row.endswith("\\|") else row[1:]
            out += [(n, cell.strip()) for cell in CELL_SEPARATOR.split(row)]
    return out


def documented_commands() -> list[tuple[str, str]]:
    """(where, command line) of every line that starts with `fersweep ` in a bash block of the README and docs/
    (a line ending in a backslash continued by the next)."""
    found = []
    for page in PAGES:
        for info, first, lines in code_blocks(page):
            if info.split()[:1] != ["bash"]:
                continue
            joined: list[tuple[int, str]] = []
            for i, line in enumerate(lines):
                if joined and joined[-1][1].endswith("\\"):
                    joined[-1] = (joined[-1][0], joined[-1][1][:-1] + " " + line.strip())
                else:
                    joined.append((first + i, line.strip()))
            found += [(f"{rel(page)}:{n}", line) for n, line in joined if line.startswith("fersweep ")]
    return found


def argv_of(line: str) -> list[str]:
    return shlex.split(line, comments=True)


def assignments(argv: list[str]) -> dict[str, str]:
    return dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("-"))


def option(argv: list[str], name: str, default: str | None = None) -> str | None:
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return default


def why_not_run(argv: list[str]) -> str | None:
    """None when ARGV (a documented fersweep command) runs on the built-in data within seconds, so this file runs
    it; otherwise why it is left to the reader. These are skipped by design, not pytest skips: their parse and their
    sweep file or config are still checked (test_the_others_parse)."""
    verb = argv[1] if len(argv) > 1 else ""
    if "--help" in argv or "-h" in argv:
        return None
    if verb == "list":
        return None
    if verb == "data" and len(argv) > 3:
        source = argv[3]
        if source != "procedural":
            return f"reads {source}, a data set these tests do not have"
        if float(option(argv, "--scale", str(DATA_INFO_SCALE))) > DATA_INFO_SCALE:
            return "builds a large procedural set: minutes"
        return None
    if verb == "trial":
        if option(argv, "--data"):
            return "reads the data set --data names"
        source = assignments(argv).get("data.source", "procedural")
        if source != "procedural":
            return f"reads {source}, a data set these tests do not have"
        scale = assignments(argv).get("data.scale")
        if scale is None or float(scale) > TINY_SCALE:
            return f"trains at data.scale {scale or 'default'}: minutes (a tiny trial sets data.scale <= {TINY_SCALE})"
        return None
    if verb == "run":
        return "starts Ray and runs a sweep: minutes"
    if verb in ("report", "status"):
        return "reads a sweep's results folder, which only a running or finished sweep has"
    return NO_RULE + verb  # test_the_others_parse fails on it: a new verb needs a rule here


COMMANDS = documented_commands()
RUN = [(where, line) for where, line in COMMANDS if why_not_run(argv_of(line)) is None]
NOT_RUN = [(where, line, why_not_run(argv_of(line))) for where, line in COMMANDS if why_not_run(argv_of(line))]


def test_the_readme_fits_on_a_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines, over {MAX_README_LINES}: move detail to a page of docs/ and link it")


def test_the_readme_links_every_docs_page():
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in links(README)}
    missing = [rel(p) for p in DOCS if p.resolve() not in linked]
    assert DOCS and not missing, f"README.md links no {', '.join(missing)}: a page nobody can find"


def test_every_link_leads_somewhere():
    problems = [f"{rel(page)}:{n}: ({target}) {why}"
                for page in PAGES for n, target in links(page) if (why := link_problem(page, target))]
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_no_table_cell_is_over_the_limit():
    long = [f"{rel(page)}:{n}: {len(cell)} characters: {cell[:80]}..."
            for page in PAGES for n, cell in table_cells(page) if len(cell) > MAX_CELL]
    assert not long, (f"table cells over {MAX_CELL} characters (move the text to a list or prose below the "
                      "table):\n" + "\n".join(long))


def test_the_checks_themselves():
    """The readers above find what they should, so a passing test means something."""
    assert slug("Subjects and k-fold (`data.group`, `data.folds`, `data.fold`)") == (
        "subjects-and-k-fold-datagroup-datafolds-datafold")
    assert slug("Leaky splits: `data.dedupe`") == "leaky-splits-datadedupe"
    assert link_problem(README, "docs/nowhere.md") and link_problem(README, "docs/data.md#nowhere")
    assert link_problem(README, "ftp://example.com/x") and link_problem(README, "https://")
    assert link_problem(README, "https://docs.ray.io/en/latest/") is None
    assert len(COMMANDS) == len(RUN) + len(NOT_RUN)


def test_enough_documented_commands_run():
    ran = "\n".join(f"  {where}: {line}" for where, line in RUN)
    assert len(RUN) >= MIN_COMMANDS_RUN, (
        f"only {len(RUN)} documented fersweep commands run here (at least {MIN_COMMANDS_RUN}: --help, list, "
        f"data info procedural, a tiny trial):\n{ran}")
    verbs = {argv_of(line)[1] for _, line in RUN}
    assert {"list", "data", "trial"} <= verbs, f"runs {sorted(verbs)}; the docs lost a list, data or trial example"


@pytest.mark.parametrize("where, line", RUN, ids=[line for _, line in RUN])
def test_a_documented_command_runs(where, line, tmp_path, monkeypatch, capsys):
    """Run as a reader would, in an empty folder (fersweep's own entry point, in this process: a new interpreter per
    command would cost more than most commands); the data cache is the test session's (FERCORE_CACHE)."""
    argv = argv_of(line)
    monkeypatch.chdir(tmp_path)
    started = time.monotonic()
    try:
        code = main(argv[1:])
    except SystemExit as e:  # argparse's --help
        code = e.code or 0
    out, err = capsys.readouterr()
    assert code == 0, f"{where}: `{line}` exited {code}:\n{err[-3000:]}"
    assert out.strip(), f"{where}: `{line}` printed nothing"
    assert time.monotonic() - started < COMMAND_TIMEOUT_S, (
        f"{where}: `{line}` ran over {COMMAND_TIMEOUT_S} s; make the example smaller or let why_not_run leave it out")


def test_the_others_parse():
    """What is not run is still checked: fersweep's parser takes it, a sweep file it names validates, a trial's
    KEY=VALUE config resolves. Each one's reason for not running is listed in the failure message's context."""
    from fercore import config
    from fercore.cli import _parser
    from fercore.sweep.spec import load_sweep

    problems = [f"{where}: `{line}`: {why}`: say whether it runs on the built-in data in seconds"
                for where, line, why in NOT_RUN if why.startswith(NO_RULE)]
    for where, line, why in NOT_RUN:
        argv = argv_of(line)
        try:
            args = _parser().parse_args(argv[1:])
        except SystemExit:
            problems.append(f"{where}: `{line}`: fersweep's parser refuses it (not run: {why})")
            continue
        try:
            if argv[1] == "run" and not args.resume:
                load_sweep(str(REPO_ROOT / args.sweep) if (REPO_ROOT / args.sweep).exists() else args.sweep,
                           args.space_file)
            elif argv[1] == "trial":
                config.resolve(config.parse_assignments(args.assignments))
        except Exception as e:  # noqa: BLE001 - every problem is reported with its command
            problems.append(f"{where}: `{line}`: {type(e).__name__}: {e} (not run: {why})")
    assert not problems, "documented fersweep commands that cannot work:\n" + "\n".join(problems)
