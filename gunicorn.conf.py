"""gunicorn's limits on what a client may send before hubmgr sees it (gunicorn reads
./gunicorn.conf.py by itself: the image's CMD and docker-compose.yml's web service). The
process model (--workers, --threads) stays on their command lines.

gunicorn has no limit on a request's body: hubmgr.web.limits.BodyLimit refuses a body larger
than REQUEST_BODY_LIMIT (8 MB) from its Content-Length, and a chunked one, unread."""

limit_request_line = 4094  # bytes of method, path and query string (the table's stay far below)
limit_request_fields = 100  # headers
limit_request_field_size = 8190  # bytes of one header (a session and a CSRF cookie fit)
