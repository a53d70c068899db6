from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from roomvoice.health import healthz
from voice import views as voice_views

urlpatterns = [
    path("", voice_views.home, name="home"),
    path("healthz", healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("rooms/", include("voice.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("api.urls")),
    path("telephony/", include("telephony.urls")),
]
