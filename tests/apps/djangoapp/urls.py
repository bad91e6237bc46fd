from django.urls import path

from tests.apps.djangoapp import views

urlpatterns = [
    path("async", views.asyncView),
    path("sync", views.syncView),
    path("stream", views.stream),
    path("upload", views.upload),
]
