from django.urls import path

from ontology import views

urlpatterns = [
    path("ontology/", views.vocabulary, name="vocabulary"),
    path("ontology/shapes/", views.shapes, name="shapes"),
    path("ontology/<str:version>/", views.vocabulary, name="vocabulary-version"),
]
