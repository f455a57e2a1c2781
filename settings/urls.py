"""URLs of the host project: the admin, and ATP's JSON API under /atp/."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("atp/", include("atp.urls")),
]
