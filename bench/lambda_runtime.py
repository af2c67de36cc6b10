"""A stand-in for the Lambda Python runtime's cold start: import a handler, invoke it once.

Run as a script in a fresh interpreter: ``python bench/lambda_runtime.py MODULE:ATTR EVENT``.
It imports ``MODULE``, calls ``ATTR(event, context)`` with the JSON event in file
``EVENT`` and writes the response's status code as one JSON line to stdout; the parent
stops its clock at that line, as Lambda's init plus first invoke.
"""

from __future__ import annotations

import importlib
import json
import sys


class Context:
    """The attributes of Lambda's context object that Mangum and Relay's logs read."""

    function_name = "relay"
    aws_request_id = "c6af9ac6-7b61-11e6-9a41-93e812345678"
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:relay"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def main() -> None:
    target, event_path = sys.argv[1], sys.argv[2]
    with open(event_path, encoding="utf-8") as handle:
        event = json.load(handle)
    module_name, _, attribute = target.partition(":")
    handler = getattr(importlib.import_module(module_name), attribute)
    response = handler(event, Context())
    sys.stdout.write(json.dumps({"statusCode": response.get("statusCode")}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
