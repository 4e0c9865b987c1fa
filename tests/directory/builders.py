"""INS identities and patients for tests, written as an identity office would register them."""

from __future__ import annotations

import random
from datetime import date

from google.type import date_pb2
from parcours.directory.v1 import directory_pb2, directory_pb2_grpc

from services.directory.demo import TEST_NIR_OID
from services.directory.identifiers import nir_key
from tests.support import request_id

Metadata = tuple[tuple[str, str], ...]
_rng = random.Random()


def random_ins(
    *,
    family: str = "ESSAI",
    given: str = "CAMILLE",
    sex: directory_pb2.Sex.ValueType = directory_pb2.SEX_FEMALE,
) -> directory_pb2.InsIdentityInput:
    """A fresh test-NIR identity whose matricule agrees with its traits (sex, birth month, birth place)."""
    born = date(_rng.randint(1930, 2009), _rng.randint(1, 12), _rng.randint(1, 28))
    place = f"42{_rng.randint(1, 999):03d}"
    sex_digit = "1" if sex == directory_pb2.SEX_MALE else "2"
    first13 = f"{sex_digit}{born.year % 100:02d}{born.month:02d}{place}{_rng.randint(1, 999):03d}"
    return directory_pb2.InsIdentityInput(
        matricule=first13 + nir_key(first13),
        oid=TEST_NIR_OID,
        birth_family_name=family,
        birth_given_names=given,
        birth_date=date_pb2.Date(year=born.year, month=born.month, day=born.day),
        sex=sex,
        birth_place_code=place,
    )


def ipp() -> str:
    return f"T-{_rng.randrange(16**12):012x}"


async def register(
    directory: directory_pb2_grpc.DirectoryServiceStub,
    metadata: Metadata,
    finess: str,
    ins: directory_pb2.InsIdentityInput | None = None,
    *,
    status: directory_pb2.IdentityStatus.ValueType = directory_pb2.IDENTITY_STATUS_QUALIFIED,
) -> directory_pb2.Patient:
    """A patient registered with a new IPP at `finess` (a fresh identity unless `ins` is given)."""
    reply = await directory.CreatePatient(
        directory_pb2.CreatePatientRequest(
            request_id=request_id(),
            ins=ins or random_ins(),
            identity_status=status,
            local_identifier=directory_pb2.LocalIdentifier(
                establishment=f"establishments/{finess}", ipp=ipp()
            ),
        ),
        metadata=metadata,
    )
    return reply.patient
