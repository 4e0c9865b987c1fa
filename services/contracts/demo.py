"""`python -m services.contracts.demo`: demo cases for `make run`, through the contracts service's API.

Run by the orchestrator once every service is SERVING: promoters file, officers instruct, the Ordre gives or
refuses its visa and the director general signs, as they would through their systems and the console. Region
84 (Auvergne-Rhône-Alpes) gets cases in every state a case can reach on the day it is filed:
- ARS contracts: draft, submitted, awaiting documents (its documents step is overdue a minute later:
  `make run` gives the promoters' documents step a one-minute due time), under review, changes requested,
  awaiting signature, active for three years, active and expiring within 90 days, rejected, withdrawn,
  terminated;
- télésurveillance operator declarations: declared, awaiting documents, acknowledged (effective tomorrow),
  effective, rejected, withdrawn, lapsed;
- intermediary contract reviews before the Ordre of the Loire: under review with a failing clause, changes
  requested, visa given, visa refused, withdrawn;
- agrément applications of a téléconsultation company: filed, awaiting documents, granted, refused,
  withdrawn.
Region 93 (PACA) follows the CNOM 2016 recommendation: there, an out-of-parcours contract awaits the Ordre's
visa, and another was refused it. States reached only by time passing (expired, granted by silence) come by
themselves. Request ids derive from the case and the step, and a hub that already holds the demo cases is
left as it is.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.type import date_pb2  # type: ignore[import-untyped]
from parcours.billing.v1 import billing_pb2
from parcours.contracts.v1 import contracts_pb2 as c
from parcours.contracts.v1 import contracts_pb2_grpc

from services.contracts import clock
from services.kit.settings import KitSettings
from services.kit.tokens import mint_token, staff_subject

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://parcours.invalid/contracts/demo")
PROMOTER_FINESS = "420000017"  # CH du Forez, support of the GHT Loire
DOCTOR = "10000000101"  # Claire Martinon, GP of the GHT Loire
OPERATOR_DOCTOR = "10000001701"  # a cardiologist of 380000024, télésurveillance operator
DEMO_TITLE = "Téléconsultations programmées en EHPAD (démo)"
Metadata = tuple[tuple[str, str], ...]


def _date(day: date) -> date_pb2.Date:
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


class Demo:
    """Who acts in the demo, each through the certificate their system would present."""

    def __init__(self, pki: Path, address: str) -> None:
        self._pki = pki
        self._address = address
        self._kid = json.loads((pki / "jwks.json").read_text())["keys"][0]["kid"]
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, certificate: str) -> grpc.aio.Channel:
        if certificate not in self._channels:
            prefix = f"establishment-{certificate}" if certificate.isdigit() else certificate
            credentials = grpc.ssl_channel_credentials(
                root_certificates=(self._pki / "ca.pem").read_bytes(),
                private_key=(self._pki / f"{prefix}-key.pem").read_bytes(),
                certificate_chain=(self._pki / f"{prefix}.pem").read_bytes(),
            )
            self._channels[certificate] = grpc.aio.secure_channel(self._address, credentials)
        return self._channels[certificate]

    def _token(self, subject: str, roles: list[str], **claims: Any) -> Metadata:
        token = mint_token(
            signing_key_file=self._pki / "token-signing-key.pem",
            kid=self._kid,
            issuer=os.environ.get("PARCOURS_TOKEN_ISSUER", KitSettings.model_fields["token_issuer"].default),
            audience=os.environ.get(
                "PARCOURS_TOKEN_AUDIENCE", KitSettings.model_fields["token_audience"].default
            ),
            subject=subject,
            profession=claims.pop("profession", None),
            specialty=claims.pop("specialty", None),
            roles=roles,
            **claims,
        )
        return (("authorization", f"Bearer {token}"),)

    def staff(self, name: str, role: str, **scope: str) -> Caller:
        """ARS staff and the Ordre through the hub's console (the `cli` identity here)."""
        return Caller(self._channel("cli"), self._token(staff_subject(name), [role], **scope))

    def promoter(self, finess: str = PROMOTER_FINESS) -> Caller:
        return Caller(self._channel(finess), self._token(staff_subject(f"promoter-{finess}"), ["promoter"]))

    def practitioner(self, rpps: str, finess: str, specialty: str) -> Caller:
        token = self._token(f"8{rpps}", [], profession="PROFESSION_PHYSICIAN", specialty=specialty)
        return Caller(self._channel(finess), token)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


class Caller:
    def __init__(self, channel: grpc.aio.Channel, metadata: Metadata) -> None:
        self._stub = contracts_pb2_grpc.ContractServiceStub(channel)
        self._metadata = metadata

    def __getattr__(self, method: str) -> Callable[[Any], Awaitable[Any]]:
        rpc = getattr(self._stub, method)

        async def call(request: Any) -> Any:
            return await rpc(request, metadata=self._metadata, timeout=60)

        return call


def rid(*parts: object) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(str(p) for p in parts)))


async def load(demo: Demo) -> int:
    """File and instruct the demo cases; how many."""
    today = clock.local_date(datetime.now(UTC), "Europe/Paris")
    promoter = demo.promoter()
    officer = demo.staff("claire.ars84", "ars_officer", region="84")
    signatory = demo.staff("dg.ars84", "ars_signatory", region="84")
    ordre = demo.staff("cdom42", "ordre_reviewer", territory="42")
    operator = demo.staff("dgos", "hub_operator")
    existing = await promoter.ListArsContracts(c.ListArsContractsRequest(page_size=500))
    if any(x.title == DEMO_TITLE for x in existing.ars_contracts):
        return 0
    count = 0

    async def contract(label: str, *, title: str, days: int, region: str = "84", departement: str = "42",
                       in_parcours: bool = False, steps: int = 0) -> str:  # fmt: skip
        """A contract taken `steps` steps along: submitted, marked complete, approved, previewed, signed."""
        nonlocal count
        count += 1
        filer = promoter
        name = (
            await filer.CreateArsContract(
                c.CreateArsContractRequest(
                    request_id=rid(label, "create"),
                    ars_contract=c.ArsContract(
                        region=f"regions/{region}",
                        departement=departement,
                        title=title,
                        description="Téléconsultations programmées avec les médecins de l'établissement.",
                        activity=c.Activity(
                            act_type=billing_pb2.ACT_TYPE_TELECONSULTATION,
                            offerer=c.OFFERER_ESTABLISHMENT,
                            in_parcours=in_parcours,
                        ),
                        requested_start_date=_date(today),
                        requested_end_date=_date(today + timedelta(days=days)),
                    ),
                )
            )
        ).ars_contract.name
        if steps >= 1:
            await filer.SubmitArsContract(
                c.SubmitArsContractRequest(request_id=rid(label, "submit"), name=name)
            )
        if steps >= 2:
            await officer.MarkArsContractComplete(
                c.MarkArsContractCompleteRequest(request_id=rid(label, "complete"), name=name)
            )
        if steps >= 3:
            await officer.ApproveArsContract(
                c.ApproveArsContractRequest(
                    request_id=rid(label, "approve"), name=name, motivation="Conforme"
                )
            )
        if steps >= 4:
            await signatory.PreviewCaseDecision(
                c.PreviewCaseDecisionRequest(
                    request_id=rid(label, "preview"), parent=name, kind=c.DECISION_KIND_CONTRACT_APPROVAL
                )
            )
            await signatory.SignArsContract(
                c.SignArsContractRequest(request_id=rid(label, "sign"), name=name)
            )
        return str(name)

    await contract("draft", title="Télé-expertise dermatologique (brouillon)", days=730)
    await contract("submitted", title="Téléconsultations de psychiatrie en CMP", days=730, steps=1)
    late = await contract("documents", title=DEMO_TITLE, days=1095, steps=1)
    await officer.RequestArsContractDocuments(
        c.RequestArsContractDocumentsRequest(
            request_id=rid("documents", "ask"),
            name=late,
            motivation="Le dossier est incomplet.",
            items=["Convention signée entre les établissements", "Attestation HDS de l'hébergeur"],
        )
    )
    await contract("review", title="Télésurveillance cardiaque post-opératoire", days=1095, steps=2)
    changes = await contract("changes", title="Téléconsultations gériatriques de nuit", days=1095, steps=2)
    await officer.RequestArsContractChanges(
        c.RequestArsContractChangesRequest(
            request_id=rid("changes", "ask"),
            name=changes,
            motivation="Quelques points à préciser.",
            items=["Article 4 : modalités de permanence", "Annexe financière"],
        )
    )
    await contract("signature", title="Téléconsultations pédiatriques", days=1095, steps=3)
    await contract("active", title="Télé-expertise en dermatologie pour les EHPAD", days=1095, steps=4)
    await contract("expiring", title="Téléconsultations en maison d'arrêt", days=60, steps=4)
    rejected = await contract("rejected", title="Plateforme de téléconseil", days=365, steps=2)
    await officer.RejectArsContract(
        c.RejectArsContractRequest(
            request_id=rid("rejected", "reject"),
            name=rejected,
            motivation="Hors du champ de la télémédecine.",
        )
    )
    withdrawn = await contract("withdrawn", title="Téléconsultations ophtalmologiques", days=365)
    await promoter.WithdrawArsContract(
        c.WithdrawArsContractRequest(
            request_id=rid("withdrawn", "withdraw"), name=withdrawn, motivation="Abandon"
        )
    )
    terminated = await contract(
        "terminated", title="Télésurveillance des plaies chroniques", days=730, steps=4
    )
    await officer.TerminateArsContract(
        c.TerminateArsContractRequest(
            request_id=rid("terminated", "terminate"),
            name=terminated,
            motivation="Fin du financement régional.",
        )
    )

    # Region 93 follows the CNOM 2016 recommendation: out of the parcours, a contract needs the Ordre's visa.
    paca = demo.staff("ars93", "ars_officer", region="93")
    policies = await paca.ListPolicyVersions(c.ListPolicyVersionsRequest(parent="regions/93"))
    if not policies.region_policies:
        await paca.PublishPolicyVersion(
            c.PublishPolicyVersionRequest(
                request_id=rid("paca", "cnom"),
                parent="regions/93",
                region_policy=c.RegionPolicy(
                    effective_date=_date(today),
                    profile=c.RegionPolicy.PROFILE_CNOM_2016,
                    note="Délibération du directeur général (démo)",
                ),
            )
        )
    visa = await contract(
        "visa", title="Téléconsultations non programmées", days=730, region="93", departement="13", steps=1
    )
    await paca.MarkArsContractComplete(
        c.MarkArsContractCompleteRequest(request_id=rid("visa", "complete"), name=visa)
    )
    refused = await contract("refused", title="Offre de téléconsultation d'assureur", days=730, region="93",
                             departement="13", steps=1)  # fmt: skip
    await paca.MarkArsContractComplete(
        c.MarkArsContractCompleteRequest(request_id=rid("refused", "complete"), name=refused)
    )
    await demo.staff("cdom13", "ordre_reviewer", territory="13").RefuseArsContractVisa(
        c.RefuseArsContractVisaRequest(
            request_id=rid("refused", "visa"), name=refused, motivation="Publicité indirecte pour l'assureur."
        )
    )

    count += await declarations(demo, officer, today)
    count += await reviews(demo, ordre)
    count += await agrements(operator)
    return count


async def declarations(demo: Demo, officer: Caller, today: date) -> int:
    cardiologist = demo.practitioner(OPERATOR_DOCTOR, "380000024", "SPECIALTY_CARDIOLOGY")

    async def declare(
        label: str, level: billing_pb2.OperatorLevel.ValueType = billing_pb2.OPERATOR_LEVEL_1
    ) -> str:
        return str(
            (
                await cardiologist.CreateOperatorDeclaration(
                    c.CreateOperatorDeclarationRequest(
                        request_id=rid("declaration", label),
                        operator_declaration=c.OperatorDeclaration(
                            region="regions/84",
                            departement="38",
                            indications=[c.INDICATION_HEART_FAILURE],
                            device=f"CardioSuivi 3 ({label})",
                            device_on_latm_list=True,
                            operator_level=level,
                        ),
                    )
                )
            ).operator_declaration.name
        )

    async def acknowledge(name: str, label: str, day: date) -> None:
        await officer.AcknowledgeOperatorDeclaration(
            c.AcknowledgeOperatorDeclarationRequest(
                request_id=rid("declaration", label, "ack"), name=name, effective_date=_date(day)
            )
        )

    await declare("déclarée")
    pending = await declare("pièces")
    await officer.RequestOperatorDeclarationDocuments(
        c.RequestOperatorDeclarationDocumentsRequest(
            request_id=rid("declaration", "pièces", "ask"),
            name=pending,
            motivation="Pièce manquante",
            items=["Marquage CE du dispositif"],
        )
    )
    await acknowledge(await declare("demain"), "demain", today + timedelta(days=1))
    await acknowledge(await declare("effective", billing_pb2.OPERATOR_LEVEL_2), "effective", today)
    rejected = await declare("rejetée")
    await officer.RejectOperatorDeclaration(
        c.RejectOperatorDeclarationRequest(
            request_id=rid("declaration", "rejetée", "reject"),
            name=rejected,
            motivation="DMN non inscrit LATM",
        )
    )
    withdrawn = await declare("retirée")
    await cardiologist.WithdrawOperatorDeclaration(
        c.WithdrawOperatorDeclarationRequest(
            request_id=rid("declaration", "retirée", "withdraw"), name=withdrawn
        )
    )
    lapsed = await declare("caduque")
    await acknowledge(lapsed, "caduque", today)
    await officer.LapseOperatorDeclaration(
        c.LapseOperatorDeclarationRequest(
            request_id=rid("declaration", "caduque", "lapse"),
            name=lapsed,
            motivation="Plus de médecin dans l'équipe",
        )
    )
    return 7


async def reviews(demo: Demo, ordre: Caller) -> int:
    doctor = demo.practitioner(DOCTOR, PROMOTER_FINESS, "SPECIALTY_GENERAL_MEDICINE")

    async def submit(label: str, company: str) -> str:
        return str(
            (
                await doctor.CreateIntermediaryContractReview(
                    c.CreateIntermediaryContractReviewRequest(
                        request_id=rid("review", label),
                        intermediary_contract_review=c.IntermediaryContractReview(
                            region="regions/84",
                            territory="42",
                            company_siren="912345678",
                            company_name=company,
                            offer="Téléconsultations non programmées en soirée pour une mutuelle.",
                        ),
                    )
                )
            ).intermediary_contract_review.name
        )

    async def mark(
        name: str, label: str, clause: c.Clause.ValueType, status: c.ClauseStatus.ValueType, note: str = ""
    ) -> None:
        await ordre.MarkIntermediaryContractClause(
            c.MarkIntermediaryContractClauseRequest(
                request_id=rid("review", label, clause), name=name, clause=clause, status=status, note=note
            )
        )

    failing = await submit("clause", "MédiConsult SAS")
    await mark(failing, "clause", c.CLAUSE_PROFESSIONAL_INDEPENDENCE, c.CLAUSE_STATUS_SATISFIED)
    await mark(
        failing, "clause", c.CLAUSE_REMUNERATION, c.CLAUSE_STATUS_NOT_SATISFIED, "Rémunération au volume"
    )
    changes = await submit("changes", "SantéDirect SAS")
    await ordre.RequestIntermediaryContractChanges(
        c.RequestIntermediaryContractChangesRequest(
            request_id=rid("review", "changes", "ask"),
            name=changes,
            motivation="Clause d'exclusivité à revoir.",
            items=["Article 7 : exclusivité"],
        )
    )
    given = await submit("visa", "Consult'Express SAS")
    for clause in c.Clause.values():
        if clause:
            await mark(given, "visa", clause, c.CLAUSE_STATUS_SATISFIED)
    await ordre.GiveIntermediaryContractVisa(
        c.GiveIntermediaryContractVisaRequest(request_id=rid("review", "visa", "give"), name=given)
    )
    refused = await submit("refused", "Pharma Conseil SAS")
    await mark(
        refused, "refused", c.CLAUSE_NO_CANVASSING, c.CLAUSE_STATUS_NOT_SATISFIED, "Démarchage des patients"
    )
    await ordre.RefuseIntermediaryContractVisa(
        c.RefuseIntermediaryContractVisaRequest(
            request_id=rid("review", "refused", "refuse"),
            name=refused,
            motivation="Démarchage contraire à R.4127-19",
        )
    )
    withdrawn = await submit("withdrawn", "Allô Docteur SAS")
    await doctor.WithdrawIntermediaryContractReview(
        c.WithdrawIntermediaryContractReviewRequest(
            request_id=rid("review", "withdrawn", "withdraw"), name=withdrawn
        )
    )
    return 5


async def agrements(operator: Caller) -> int:
    labels = ("filed", "documents", "granted", "refused", "withdrawn")
    companies = {label: f"90100000{i}" for i, label in enumerate(labels, start=1)}
    names: dict[str, str] = {}
    for label, siren in companies.items():
        company = f"teleconsultationCompanies/{siren}"
        try:
            await operator.CreateTeleconsultationCompany(
                c.CreateTeleconsultationCompanyRequest(
                    request_id=rid("company", label),
                    teleconsultation_company=c.TeleconsultationCompany(
                        name=company, legal_name=f"Téléconsultation {label.capitalize()} SAS"
                    ),
                )
            )
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
        names[label] = (
            await operator.CreateAgrementApplication(
                c.CreateAgrementApplicationRequest(
                    request_id=rid("agrement", label),
                    agrement_application=c.AgrementApplication(company=company),
                )
            )
        ).agrement_application.name
    await operator.RequestAgrementDocuments(
        c.RequestAgrementDocumentsRequest(
            request_id=rid("agrement", "documents", "ask"),
            name=names["documents"],
            motivation="Pièces manquantes",
            items=["Certificat de conformité ANS"],
        )
    )
    await operator.GrantAgrement(
        c.GrantAgrementRequest(request_id=rid("agrement", "granted", "grant"), name=names["granted"])
    )
    await operator.RefuseAgrement(
        c.RefuseAgrementRequest(
            request_id=rid("agrement", "refused", "refuse"),
            name=names["refused"],
            motivation="Dépassements facturés",
        )
    )
    await operator.WithdrawAgrement(
        c.WithdrawAgrementRequest(
            request_id=rid("agrement", "withdrawn", "withdraw"),
            name=names["withdrawn"],
            motivation="La société renonce à sa demande",
        )
    )
    return 5


async def _main() -> int:
    address = os.environ.get("PARCOURS_CONTRACTS_ADDRESS")
    pki_dir = os.environ.get("PARCOURS_DEV_PKI_DIR")
    if not address or not pki_dir:
        sys.stderr.write("needs PARCOURS_CONTRACTS_ADDRESS and PARCOURS_DEV_PKI_DIR (run by `make run`)\n")
        return 2
    demo = Demo(Path(pki_dir), address)
    try:
        count = await load(demo)
    finally:
        await demo.close()
    if count:
        print(f"demo contracts cases: {count} (regions 84 and 93), one overdue within a minute")
    else:
        print("demo contracts cases: already there")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(_main()))
