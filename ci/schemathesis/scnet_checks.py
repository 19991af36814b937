"""schemathesis checks for the SCNet convention, loaded by ci/schemathesis.sh.

Under that convention a server error is not a 5xx: it answers HTTP 200 with code 10001
("internal error"). schemathesis's own not_a_server_error looks at the status only, so this
check looks at the envelope.
"""

import schemathesis


@schemathesis.check
def no_scnet_internal_error(ctx, response, case):
    """No answer is code 10001 (the SCNet form of a server error)."""
    try:
        body = response.json()
    except Exception:
        return None
    if isinstance(body, dict) and body.get("code") == "10001":
        raise AssertionError(f"internal error (code 10001): {body.get('msg')!r}")
    return None
