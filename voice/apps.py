from django.apps import AppConfig


class VoiceConfig(AppConfig):
    name = "voice"
    verbose_name = "Voice"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from voice.kit import autodiscover_hooks

        autodiscover_hooks()
