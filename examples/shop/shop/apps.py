"""The shop app's configuration."""

from django.apps import AppConfig


class ShopConfig(AppConfig):
    """Nothing to set up: ATP finds ``shop.tasks`` by itself."""

    name = "shop"
