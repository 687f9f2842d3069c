"""The seed's routes, included at the project root."""

from django.urls import path

from testproject.builds import views

app_name = "builds"

# ``str`` converters, not ``int``: a malformed id gets a JSON 400 from the view
# instead of the resolver's HTML 404.
urlpatterns = [
    path("applications/<str:application_id>/compile", views.start_compile, name="compile"),
    path(
        "applications/<str:application_id>/compile/<str:request_id>",
        views.compile_status,
        name="compile-status",
    ),
]
