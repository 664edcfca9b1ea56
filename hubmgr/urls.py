from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from hubmgr.web import api, hooks, views

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("repositories/", views.repositories, name="repositories"),
    # Repository names contain slashes; "/-/" cannot occur in one, so it separates sub-pages.
    path("repositories/<path:name>/-/children/<str:digest>", views.index_children,
         name="index-children"),
    path("repositories/<path:name>", views.repository, name="repository"),
    path("hooks/registry", hooks.registry_hook, name="registry-hook"),
    path("api/v1/repositories", api.repositories, name="api-repositories"),
    path("api/v1/repositories/<path:name>/images", api.images, name="api-images"),
]
