"""
The least a Django project needs to serve its views over ASGI.
"""

SECRET_KEY = "gracesvc-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "tests.apps.djangoapp.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, object] = {}
USE_TZ = True
# The upload test sends 10 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = 32 * 1024 * 1024
LOGGING_CONFIG = None
