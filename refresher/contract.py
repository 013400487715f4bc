"""Limits the API promises, written once: the handlers check them, the
OpenAPI document states them, the web form and the command-line client read
them. Pure constants, importable without Flask."""

MAX_FILES = 10  # videos per job
MIN_VARIATIONS = 1
MAX_VARIATIONS = 20
DEFAULT_VARIATIONS = 5
MAX_SEED_LENGTH = 128
MAX_FILE_NAME_LENGTH = 200  # a source's name as shown back
MAX_SENT_FILE_NAME_LENGTH = 1024  # a file name as an upload sends it (some clients send a path); longer is a 400
MIN_TOKEN_NAME_LENGTH = 1
MAX_TOKEN_NAME_LENGTH = 100
MIN_JOB_NAME_LENGTH = 1
MAX_JOB_NAME_LENGTH = 100
DEFAULT_LIST_LIMIT = 50  # GET /api/jobs
MAX_LIST_LIMIT = 200
MAX_PIXELS = 7680 * 4320  # 8K: decoding larger frames would cost each ffmpeg gigabytes
MAX_STREAMS = 8  # per source: an ad has one video and a few audio streams
MAX_ID_LENGTH = 64  # longer path ids are not ours: 404 without a lookup
