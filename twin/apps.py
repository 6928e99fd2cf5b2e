from django.apps import AppConfig


class TwinConfig(AppConfig):
    name = "twin"
