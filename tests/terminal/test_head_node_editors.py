"""The demo's head node (this host, whatever the release) has editors in a person's own terminal.

scripts/install-head-node-tools.sh puts nano and vi there (demo.sh and test-prepare.sh run it); here a real
provisioned person opens a real terminal, and both editors run in it, as them, and save their file.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from asgiref.sync import sync_to_async

from clusterra_site.asgi import application
from tests.conftest import REPO, require
from tests.support.terminal_support import open_page, session_cookie

# `cluster` and `real_person` come from tests/terminal/conftest.py.
SCRIPT = REPO / "scripts" / "install-head-node-tools.sh"
CTRL_O, CTRL_X, ESCAPE = b"\x0f", b"\x18", b"\x1b"


@pytest.mark.root
def test_the_install_script_is_quiet_and_does_nothing_the_second_time():
    first = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600, check=False)
    assert first.returncode == 0, first.stderr
    require(bool(shutil.which("nano") and shutil.which("vi")), f"nano or vi missing: {first.stderr.strip()}")
    again = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=60, check=False)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")


@pytest.mark.root
@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.usefixtures("_no_connection_left_open")
async def test_a_person_edits_files_with_nano_and_vi_in_their_terminal(real_person, cluster):
    require(
        bool(shutil.which("nano") and shutil.which("vi")),
        "nano or vi is missing on this host: run scripts/install-head-node-tools.sh as root",
    )
    name = await sync_to_async(lambda: real_person.posix_account.username)()
    cookie = await session_cookie(real_person)
    async with open_page(application, cluster.slug, cookie=cookie, cols=100, rows=30) as (_, _, page):
        await page.connected()
        await page.run("command -v nano", "/usr/bin/nano")
        await page.run("nano --version | head -n 1 | grep -o 'GNU nano'", "GNU nano")
        await page.run("vi --version | head -n 1 | grep -o 'Vi IMproved'", "Vi IMproved")

        # nano full-screen in the person's terminal: type, write out (^O, Enter), leave (^X). The shell
        # reads the file back only once nano has gone, so no keystroke meant for it reaches the editor.
        await page.type(b"nano notes.txt; tr a-z A-Z < notes.txt\r")
        await page.until_screen(b"[ New File ]")
        await page.type(b"written-in-nano")
        await page.type(CTRL_O)
        await page.until_screen(b"File Name to Write")
        await page.type(b"\r")
        await page.until_screen(b"Wrote 1 line")
        await page.type(CTRL_X)
        await page.until_screen(b"WRITTEN-IN-NANO\r\n")

        # vi: insert, Escape, write and quit.
        await page.type(b"vi vi.txt; tr a-z A-Z < vi.txt\r")
        await page.until_screen(b'"vi.txt"')
        await page.type(b"iwritten-in-vi" + ESCAPE + b":wq\r")
        await page.until_screen(b"WRITTEN-IN-VI\r\n")

        # Both saved in the person's own home, as the person.
        await page.run("stat -c %U ~/notes.txt ~/vi.txt | sort -u", name)
        await page.control({"type": "close"})
        await page.until_control("closed")
