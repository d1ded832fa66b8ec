"""Camera URLs carry passwords (rtsp://admin:secret@cam/...): mask them before anything is shown or logged."""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_QUERY_KEYS = {"password", "pass", "pwd", "passwd", "user", "username", "token", "api_key", "key", "auth",
                      "secret", "signature", "sig"}
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")


def mask_url(url: str) -> str:
    """`url` with the user:password part and credential-like query values replaced by `***`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return _USERINFO.sub("***@", url)
    if not parts.scheme or not parts.netloc:
        return _USERINFO.sub("***@", url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if k.lower() in _SECRET_QUERY_KEYS else v) for k, v in pairs], safe="*")
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, parts.fragment))


def scrub(text: str, secrets: list[str]) -> str:
    """Error text from libraries may echo the URL: mask every URL in it and remove known secrets."""
    text = _USERINFO.sub("***@", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
