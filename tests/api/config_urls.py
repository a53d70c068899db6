"""The project's URLs with ``api.views.config``'s routes under ``/api/v1/`` (until
``api/urls.py`` registers them itself)."""

from __future__ import annotations

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from api.views.config import register
from roomvoice.urls import urlpatterns as project_urlpatterns

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
register(router)

urlpatterns = [
    path("api/v1/", include(router.urls)),
    *project_urlpatterns,
]
