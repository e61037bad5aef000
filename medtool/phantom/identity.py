"""Fake, realistic-looking patient identities and study facts for phantom DICOM files.

Everything here is invented (random combinations of common names and made-up institutions), so
the anonymizer has realistic identifying values to remove without any real person's data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

_FIRST_F = ("MARY", "LINDA", "SUSAN", "KAREN", "NANCY", "HELEN", "ANNA", "RUTH", "JOAN", "ELENA",
            "SOFIA", "INGRID", "AMARA", "YUKI", "FATIMA", "CHLOE")
_FIRST_M = ("JAMES", "ROBERT", "JOHN", "DAVID", "PETER", "THOMAS", "MARCO", "LARS", "AHMED",
            "HIROSHI", "KWAME", "DIEGO", "PAUL", "VIKTOR", "OMAR", "HENRIK")
_LAST = ("SMITH", "JOHNSON", "MULLER", "ROSSI", "GARCIA", "NOVAK", "TANAKA", "OKAFOR", "DUBOIS",
         "KOWALSKI", "JANSEN", "LINDQVIST", "HASSAN", "SILVA", "BROWN", "NGUYEN", "PETROV")
_STREETS = ("MAPLE AVENUE", "HARBOUR ROAD", "CHURCH STREET", "LINDEN LANE", "STATION ROAD")
_CITIES = ("SPRINGFIELD", "RIVERTON", "LAKEWOOD", "FAIRVIEW", "OAKDALE")
_INSTITUTIONS = ("ST. ELSEWHERE GENERAL HOSPITAL", "RIVERTON UNIVERSITY MEDICAL CENTER",
                 "LAKEWOOD COUNTY HOSPITAL", "FAIRVIEW CHEST CLINIC")
#: (manufacturer, model, private creator, reconstruction kernel, software version)
_SCANNERS = (("GE MEDICAL SYSTEMS", "LightSpeed VCT", "GEMS_IDEN_01", "STANDARD", "LightSpeedverrel"),
             ("SIEMENS", "SOMATOM Definition AS", "SIEMENS CT VA0  COAD", "B31f", "syngo CT 2012B"),
             ("Philips", "Brilliance 64", "Philips Imaging DD 001", "B", "4.1.6"),
             ("TOSHIBA", "Aquilion ONE", "TOSHIBA_MEC_CT3", "FC08", "V6.00ER005"))


@dataclass
class Person:
    """A fake patient: everything a hospital export would carry about them."""

    name: str
    patient_id: str
    other_ids: str
    birth_date: dt.date
    birth_time: str
    sex: str
    address: str
    phone: str
    height_m: float
    weight_kg: float


@dataclass
class Site:
    """Where and on what a study was acquired, and who was involved."""

    institution: str
    address: str
    department: str
    station: str
    manufacturer: str
    model: str
    private_creator: str
    kernel: str
    software: str
    device_serial: str
    referring: str
    performing: str
    operator: str


def make_person(rng: np.random.Generator) -> Person:
    """A new fake patient."""
    sex = str(rng.choice(["F", "M"]))
    first = str(rng.choice(_FIRST_F if sex == "F" else _FIRST_M))
    middle = str(rng.choice(_FIRST_F if sex == "F" else _FIRST_M))[0]
    last = str(rng.choice(_LAST))
    birth = dt.date(1935, 1, 1) + dt.timedelta(days=int(rng.integers(0, 365 * 55)))
    return Person(
        name=f"{last}^{first}^{middle}",
        patient_id=f"MRN{rng.integers(10**6, 10**7)}",
        other_ids=f"NHS{rng.integers(10**8, 10**9)}",
        birth_date=birth,
        birth_time=f"{rng.integers(0, 24):02d}{rng.integers(0, 60):02d}00",
        sex=sex,
        address=f"{rng.integers(1, 200)} {rng.choice(_STREETS)}, {rng.choice(_CITIES)}",
        phone=f"555-{rng.integers(1000, 9999)}",
        height_m=round(float(rng.uniform(1.55, 1.95)), 2),
        weight_kg=round(float(rng.uniform(50.0, 110.0)), 1),
    )


def _doctor(rng: np.random.Generator) -> str:
    return f"{rng.choice(_LAST)}^{rng.choice(_FIRST_F + _FIRST_M)}^^DR"


def make_site(rng: np.random.Generator) -> Site:
    """A fake acquisition site and staff."""
    manufacturer, model, creator, kernel, software = _SCANNERS[int(rng.integers(len(_SCANNERS)))]
    institution = str(rng.choice(_INSTITUTIONS))
    return Site(
        institution=institution,
        address=f"{rng.integers(1, 900)} {rng.choice(_STREETS)}, {rng.choice(_CITIES)}",
        department="RADIOLOGY",
        station=f"CT{rng.integers(1, 9)}_{institution.split()[0].strip('.')}",
        manufacturer=manufacturer,
        model=model,
        private_creator=creator,
        kernel=kernel,
        software=software,
        device_serial=f"{rng.integers(10**5, 10**6)}",
        referring=_doctor(rng),
        performing=_doctor(rng),
        operator=f"{rng.choice(_LAST)}^{rng.choice(_FIRST_F + _FIRST_M)}",
    )


def age_string(birth: dt.date, on: dt.date) -> str:
    """DICOM AS value (``"063Y"``) of someone born on ``birth`` at date ``on``."""
    years = on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))
    return f"{years:03d}Y"
