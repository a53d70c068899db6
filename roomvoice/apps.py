from django.apps import AppConfig


class RoomvoiceConfig(AppConfig):
    name = "roomvoice"
    verbose_name = "roomvoice"

    def ready(self) -> None:
        from roomvoice import checks  # noqa: F401  (registers the system checks)
