"""A small client of Relay's HTTP API, for ``relay start --url``, ``relay demo`` and chaos.

It turns the API's error bodies back into the CLI's outcomes: a 404 for an unknown saga
or a 422 with field errors is the caller's mistake (exit 2), anything else a failure.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any, Final, NoReturn

import httpx

from tooling.timeline import TERMINAL_RUN_STATUSES, make_console

IDEMPOTENCY_HEADER: Final = "Idempotency-Key"
_RETRYABLE_STATUSES: Final = frozenset({429, 502, 503, 504})


class RemoteError(Exception):
    """Raised when the API refuses a request or cannot be reached.

    ``exit_code`` is 2 when the request itself was wrong (4xx), else 1.
    """

    def __init__(self, message: str, *, status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body

    @property
    def exit_code(self) -> int:
        """2 for a request the API will never accept as sent, 1 otherwise."""
        return 2 if self.status is not None and 400 <= self.status < 500 else 1


class RemoteRuns:
    """Start and read runs through ``POST /v1/sagas/{name}/runs`` and ``GET /v1/runs/{id}``.

    Args:
        base_url: The API's base URL, such as ``http://127.0.0.1:8080``.
        timeout_seconds: Longest single request.
        api_key: Sent as ``X-Api-Key`` (a stack that requires API keys).
    """

    def __init__(
        self, base_url: str, *, timeout_seconds: float = 10.0, api_key: str | None = None
    ) -> None:
        # A local stack is on 127.0.0.1; an HTTP(S)_PROXY from the environment would
        # send those requests elsewhere.
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout_seconds,
            trust_env=False,
            headers={"X-Api-Key": api_key} if api_key else None,
        )

    def __enter__(self) -> RemoteRuns:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def start_or_raise(
        self, saga: str, raw_input: Any, *, idempotency_key: str | None = None
    ) -> str:
        """Start a run and return its id.

        Raises:
            RemoteError: the API refused the request or could not be reached.
        """
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else {}
        try:
            response = self._client.post(f"/v1/sagas/{saga}/runs", json=raw_input, headers=headers)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self._client.base_url}: {exc}") from exc
        if response.status_code != 202:
            raise _refused(response)
        return str(response.json()["run_id"])

    def start(self, saga: str, raw_input: Any, *, idempotency_key: str | None = None) -> str:
        """Like ``start_or_raise``, but print what was wrong and exit (CLI use)."""
        try:
            return self.start_or_raise(saga, raw_input, idempotency_key=idempotency_key)
        except RemoteError as exc:
            _exit_with(exc)

    def get(self, run_id: str) -> dict[str, Any]:
        """The ``GET /v1/runs/{id}`` view.

        Raises:
            RemoteError: the run does not exist or the API could not be reached.
        """
        try:
            response = self._client.get(f"/v1/runs/{run_id}")
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self._client.base_url}: {exc}") from exc
        if response.status_code != 200:
            raise _refused(response)
        view: dict[str, Any] = response.json()
        return view

    def list_runs(self, *, limit: int = 50, saga: str | None = None) -> list[dict[str, Any]]:
        """Run headers from ``GET /v1/runs``, newest first.

        Raises:
            RemoteError: the API refused the request or could not be reached.
        """
        params: dict[str, str | int] = {"limit": limit}
        if saga:
            params["saga"] = saga
        try:
            response = self._client.get("/v1/runs", params=params)
        except httpx.HTTPError as exc:
            raise RemoteError(f"cannot reach {self._client.base_url}: {exc}") from exc
        if response.status_code != 200:
            raise _refused(response)
        runs: list[dict[str, Any]] = response.json()["runs"]
        return runs

    def wait(
        self, run_id: str, *, timeout_seconds: float, poll_seconds: float = 0.2
    ) -> dict[str, Any]:
        """Poll the run until it ends or ``timeout_seconds`` pass; return its last view.

        Transient API errors (a restarting stack) are waited out until the deadline.
        """
        deadline = time.monotonic() + timeout_seconds
        view: dict[str, Any] | None = None
        while True:
            try:
                view = self.get(run_id)
            except RemoteError as exc:
                if exc.status is not None and exc.status not in _RETRYABLE_STATUSES:
                    _exit_with(exc)
            if view is not None and view["status"] in TERMINAL_RUN_STATUSES:
                return view
            if time.monotonic() >= deadline:
                if view is None:
                    _exit_with(RemoteError(f"run {run_id} could not be read"))
                return view
            time.sleep(poll_seconds)


def _refused(response: httpx.Response) -> RemoteError:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    message = body.get("message") if isinstance(body, dict) else None
    return RemoteError(
        f"HTTP {response.status_code}: {message or body}", status=response.status_code, body=body
    )


def _exit_with(exc: RemoteError) -> NoReturn:
    console = make_console(stderr=True)
    console.print(f"[bold red]error:[/] {exc}", highlight=False)
    body = exc.body if isinstance(exc.body, dict) else {}
    if body.get("error") == "invalid_input":
        for error in body.get("detail", []):
            where = ".".join(str(part) for part in error.get("loc", ())) or "<input>"
            console.print(f"  [bold]{where}[/]: {error.get('msg', error)}", highlight=False)
    sys.exit(exc.exit_code)
