"""A no-op thumbnailer: seeded images are already small, so serve the original.

Avoids sorl-thumbnail / easy-thumbnails (and their run-time writes to MEDIA_ROOT).
"""

from django.conf import settings
from oscar.core.thumbnails import AbstractThumbnailer


class _Thumb:
    def __init__(self, name):
        self.name = name
        self.url = settings.MEDIA_URL + str(name)


class OriginalImageThumbnailer(AbstractThumbnailer):
    def generate_thumbnail(self, source, **opts):
        return _Thumb(getattr(source, "name", source))

    def delete_thumbnails(self, source):
        pass
