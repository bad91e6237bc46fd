"""
Django's ASGI handler, as C{manage.py startproject} writes it:
C{--asgi tests.apps.djangoapp.asgi:application}.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.djangoapp.settings")

application = get_asgi_application()
