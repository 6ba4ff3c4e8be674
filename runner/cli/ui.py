"""`lorarun ui [--port P] [--host H]`: every job, its cost and its samples, live in a browser (runner/ui/)."""

from __future__ import annotations

import typer

from lorarun.runner.console import console, err_console
from lorarun.runner.state import JobStore


def register(app: typer.Typer) -> None:
    app.command("ui", help="Open the jobs in a browser: live loss, samples, cost; stop or pull from there.")(ui)


def ui(
    port: int = typer.Option(8642, "--port", help="Port on 127.0.0.1 (the next free one if taken; 0: any free one)."),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Listen elsewhere than loopback (anyone who can reach it and has the token can stop your jobs).",
    ),
    open_browser: bool = typer.Option(False, "--open", help="Open the page in your default browser."),
) -> None:
    from lorarun.runner.ui.server import UIServer, is_loopback

    if not is_loopback(host):
        err_console.print(
            f"[bold yellow]warning:[/] listening on {host}, beyond this machine: anyone who can reach it and has the "
            "token can see your jobs and stop them. The page is plain HTTP (use an SSH tunnel rather than this).",
            highlight=False,
        )
    server = UIServer(JobStore(), host=host, port=port)
    console.print(f"lorarun ui: {server.url}", highlight=False, soft_wrap=True)
    console.print("(the token in that address is the password; Ctrl-C stops the UI, never a job)", highlight=False)
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
