"""What the camera wrote into a photo (EXIF): when it was taken, where (GPS), and which camera took it.

Only the file's header is read (never the pixels), so a photo cut short by a full card still gives its
date. Anything missing, malformed or implausible is None: the camera's metadata is a hint, never an
error (the photo itself is checked when it is decoded)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from PIL import Image

EXIF_IFD, GPS_IFD = 0x8769, 0x8825
MAKE, MODEL, DATETIME = 0x010F, 0x0110, 0x0132
DATETIME_ORIGINAL, BODY_SERIAL = 0x9003, 0xA431
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4


@dataclass(frozen=True)
class CameraMetadata:
    taken: datetime | None = None  # the camera's local time, as it wrote it (no time zone)
    latitude: float | None = None
    longitude: float | None = None
    camera: str | None = None  # "Make Model #serial", whatever of it the camera wrote

    @property
    def date(self) -> str | None:
        """ISO date and time, as the catalogue stores a date (2024-06-01T10:32:05)."""
        return self.taken.isoformat(timespec="seconds") if self.taken else None

    @property
    def location(self) -> str | None:
        """'lat,lon' in decimal degrees, as the catalogue stores a position (exports.common.lat_lon reads it)."""
        if self.latitude is None or self.longitude is None:
            return None
        return f"{self.latitude:.6f},{self.longitude:.6f}"


def read(path) -> CameraMetadata:
    try:
        with Image.open(Path(path)) as img:
            exif = img.getexif()
            details = exif.get_ifd(EXIF_IFD)
            gps = exif.get_ifd(GPS_IFD)
    except Exception:  # not an image, or a header Pillow cannot parse: no metadata
        return CameraMetadata()
    taken = _when(details.get(DATETIME_ORIGINAL)) or _when(exif.get(DATETIME))
    latitude = _degrees(gps.get(GPS_LAT), gps.get(GPS_LAT_REF), "S", 90)
    longitude = _degrees(gps.get(GPS_LON), gps.get(GPS_LON_REF), "W", 180)
    if latitude is None or longitude is None or (latitude == 0 and longitude == 0):
        latitude = longitude = None  # 0,0 is what a camera without a fix writes, not a sighting in the Gulf of Guinea
    return CameraMetadata(taken, latitude, longitude, _camera(exif.get(MAKE), exif.get(MODEL), details.get(BODY_SERIAL)))


def _text(value) -> str:
    if isinstance(value, bytes):
        value = value.decode("latin-1", "replace")
    return str(value).replace("\x00", "").strip() if value is not None else ""


def _when(value) -> datetime | None:
    text = _text(value)
    try:
        taken = datetime.strptime(text[:19], "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return taken if taken.year >= 1990 else None  # 0000:00:00 fails above; an unset clock says 1970 or 1980


def _degrees(value, ref, negative: str, limit: float) -> float | None:
    try:
        d, m, s = (float(v) for v in value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    degrees = d + m / 60 + s / 3600
    if _text(ref).upper().startswith(negative):
        degrees = -degrees
    return round(degrees, 6) if abs(degrees) <= limit else None


def _camera(make, model, serial) -> str | None:
    make, model, serial = _text(make), _text(model), _text(serial)
    if model.lower().startswith(make.lower()):
        make = ""  # "Canon" + "Canon EOS 7D": the make once
    name = " ".join(p for p in (make, model) if p)
    if serial:
        name += f" #{serial}"
    return name or None


def camera_tag(camera: str) -> str:
    """A short stable tag of a camera for encounter ids (4 hex digits of its name's hash)."""
    return hashlib.sha1(camera.encode()).hexdigest()[:4]


def fill(date: str | None, location: str | None, meta: CameraMetadata) -> tuple[str | None, str | None, dict]:
    """(date, location, origin): the values given win; the camera's fill those not given. `origin` keeps
    what the camera wrote (camera_date, camera_location) and which stored value is the camera's."""
    origin: dict = {}
    if meta.date:
        origin["camera_date"] = meta.date
    if meta.location:
        origin["camera_location"] = meta.location
    if not date and meta.date:
        date, origin["date"] = meta.date, "camera"
    if not location and meta.location:
        location, origin["location"] = meta.location, "camera"
    return date, location, origin
