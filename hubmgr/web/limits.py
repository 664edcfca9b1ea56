"""Request bodies are bounded before anything reads them, and files are never stored.

gunicorn has no body limit, and Django spools a multipart body's files to a temporary file
without counting them against DATA_UPLOAD_MAX_MEMORY_SIZE, so without these anyone could fill
the disk with one POST, before the CSRF check or a login."""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler
from django.http import HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError

JSON_PATHS = ("/api/", "/hooks/")


def _refuse(request, status, message):
    if request.path_info.startswith(JSON_PATHS):
        return JsonResponse({"error": message}, status=status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


class BodyLimit:
    """First in MIDDLEWARE: a body larger than REQUEST_BODY_LIMIT is answered 413 from its
    Content-Length header, unread. A body without one (Transfer-Encoding: chunked) is answered
    411: hubmgr's clients (browsers, the API's, the registry's notifications) always send the
    length, and Django would read such a body as empty anyway."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            return _refuse(request, 411, "send the body with a Content-Length header "
                                         "(hubmgr takes no chunked bodies)")
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _refuse(request, 400, "the Content-Length header is not a number")
        limit = settings.REQUEST_BODY_LIMIT
        if length > limit:
            return _refuse(request, 413, f"the body is larger than {limit // 2**20} MB, the "
                                         "most hubmgr accepts; send fewer digests at once")
        return self.get_response(request)


class FileUploadRefused(MultiPartParserError):
    """Answered 400 by Django, as any unreadable multipart body."""


class RefuseFiles(FileUploadHandler):
    """The only upload handler (FILE_UPLOAD_HANDLERS): a multipart body's plain fields are read
    as usual (Django's test client and `curl -F` send forms so), a file part makes the request a
    400 before any of its bytes are kept."""

    def new_file(self, *args, **kwargs):
        raise FileUploadRefused("hubmgr takes no file uploads")

    def receive_data_chunk(self, raw_data, start):
        return raw_data

    def file_complete(self, file_size):
        return None
