"""The console's pages: routes, forms and what each shows. `build_app(settings, deps)` gives the ASGI app."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from authlib.integrations.starlette_client import OAuth, OAuthError
from google.protobuf.timestamp_pb2 import Timestamp
from jinja2 import Environment, FileSystemLoader, select_autoescape
from parcours.contracts.v1 import contracts_pb2
from parcours.directory.v1 import directory_pb2
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from services.console import cases as case_pages
from services.console import codec as codec_endpoint
from services.console import dashboards, french
from services.console.exports import ExportWorker
from services.console.hub import Hub, ServiceError
from services.console.inbox import ASSIGNMENTS, ORDERS, TABS, InboxQuery, tab_count
from services.console.security import (
    LoginRefused,
    Officer,
    SessionMiddleware,
    csrf_ok,
    csrf_token,
    officer_from_claims,
    session_state,
    sign_in,
    sign_out,
    signed_in,
)
from services.console.settings import ConsoleSettings
from services.console.store import EVENTS, Store
from services.kit.codec import AesGcmPayloadCodec
from services.kit.temporal import OnDemandClient

logger = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
MAX_UPLOAD = 10 * 1024 * 1024
EVENT_LABELS = {
    "case_assigned": "Un dossier m'est attribué",
    "step_overdue": "Une étape que je détiens dépasse son échéance",
    "step_due_soon": "Une étape que je détiens arrive à échéance",
    "opinion_given": "Un avis que j'ai demandé est rendu",
    "message_received": "Un porteur écrit sur un dossier que je détiens",
    "export_ready": "Un export est prêt",
    "daily_digest": "Synthèse quotidienne des dossiers à échéance",
    "case_changed": "Un autre événement sur un dossier de mon périmètre (entrée en vigueur, retrait…)",
}


@dataclass
class Deps:
    """What the pages use, built once per process (services/console/server.py)."""

    settings: ConsoleSettings
    store: Store
    hub: Hub
    exports: ExportWorker
    codec: AesGcmPayloadCodec | None = None
    # Connected by the first page that needs Temporal (the codec, a case opened in Temporal's UI).
    temporal: OnDemandClient | None = None


class Page:
    def __init__(self) -> None:
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
        )
        self.env.globals.update(
            french=french,
            label=french.label,
            KINDS=french.KINDS,
            STATES=french.STATES,
            STEPS=french.STEPS,
            EVENTS=french.EVENTS,
            CLAUSES=french.CLAUSES,
            CLAUSE_STATUSES=french.CLAUSE_STATUSES,
            VERDICTS=french.VERDICTS,
            DOCUMENT_TYPES=french.DOCUMENT_TYPES,
            ROLES=french.ROLES,
            pb=contracts_pb2,
            ts=_ts,
            url_of=case_pages.url_of,
            new_request_id=lambda: str(uuid.uuid4()),
            pb_role_name=lambda value: __import__(
                "parcours.options.v1.options_pb2", fromlist=["Role"]
            ).Role.Name(value),
            earliest=lambda *values: min((v for v in values if v is not None), default=None),
        )

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        state = session_state(request.scope)
        officer = signed_in(state)
        html = self.env.get_template(template).render(
            request=request, officer=officer, csrf=csrf_token(state) if officer else "", **context
        )
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)


_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'self'; form-action 'self' http: https:",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def _ts(value: Timestamp | None) -> datetime | None:
    if value is None or (value.seconds == 0 and value.nanos == 0):
        return None
    return value.ToDatetime(tzinfo=UTC)


def build_app(deps: Deps) -> Starlette:
    settings = deps.settings
    page = Page()
    oauth = OAuth()
    oauth.register(
        "provider",
        client_id=settings.oidc_client_id,
        client_secret=settings.oidc_client_secret.get_secret_value(),
        server_metadata_url=settings.oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
        client_kwargs={"scope": settings.oidc_scopes, "code_challenge_method": "S256"},
    )
    provider = oauth.create_client("provider")
    hub, store = deps.hub, deps.store

    # -- helpers --------------------------------------------------------------------------------------------
    def officer_or_login(request: Request) -> Officer | Response:
        officer = signed_in(session_state(request.scope))
        if officer is None:
            expired = session_state(request.scope).expired
            target = "/connexion" + ("?expiree=1" if expired else "")
            return RedirectResponse(target, status_code=303)
        return officer

    def page_for(
        handler: Callable[[Request, Officer], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            found = officer_or_login(request)
            if isinstance(found, Response):
                return found
            try:
                return await handler(request, found)
            except ServiceError as error:
                return service_refusal(request, error)

        return endpoint

    def form_for(
        handler: Callable[[Request, Officer, FormData], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST handler: signed-in officer, CSRF token checked before anything else is read or done."""

        async def endpoint(request: Request) -> Response:
            state = session_state(request.scope)
            officer = signed_in(state)
            async with request.form(max_part_size=MAX_UPLOAD + 1024) as form:
                if officer is None or not csrf_ok(state, form.get("csrf_token")):
                    logger.info(
                        "form refused: %s", "no session" if officer is None else "CSRF token missing or wrong"
                    )
                    return page.render(
                        request,
                        "error.html",
                        403,
                        title="Formulaire refusé",
                        message="Ce formulaire a expiré ou ne vient pas de la console. Rechargez la page et "
                        "recommencez.",
                    )
                try:
                    return await handler(request, officer, form)
                except ServiceError as error:
                    return service_refusal(request, error)

        return endpoint

    def service_refusal(request: Request, error: ServiceError) -> Response:
        if error.hidden:
            return page.render(
                request,
                "error.html",
                404,
                title="Dossier introuvable",
                message=french.REASONS["CASE_NOT_VISIBLE"],
            )
        return page.render(
            request,
            "error.html",
            502 if error.code.name in ("UNAVAILABLE", "DEADLINE_EXCEEDED") else 409,
            title="Action refusée",
            message=french.refusal(error.reason, error.code.name, error.violations),
        )

    def back(request: Request, path: str, **flash: str) -> RedirectResponse:
        return RedirectResponse(path + (("?" + urlencode(flash)) if flash else ""), status_code=303)

    # -- health ---------------------------------------------------------------------------------------------
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        channels = await hub.readiness()
        ready = all(channels.values())
        return JSONResponse({"ready": ready, "channels": channels}, status_code=200 if ready else 503)

    # -- login and logout ---------------------------------------------------------------------------------
    async def login_page(request: Request) -> Response:
        if signed_in(session_state(request.scope)) is not None:
            return RedirectResponse("/dossiers", status_code=303)
        return page.render(
            request,
            "login.html",
            expired="expiree" in request.query_params or session_state(request.scope).expired,
            goodbye="au-revoir" in request.query_params,
            refused=request.query_params.get("refus", ""),
        )

    async def login_start(request: Request) -> Response:
        redirect: Response = await provider.authorize_redirect(
            request, settings.public_url + "/connexion/retour"
        )
        return redirect

    async def login_return(request: Request) -> Response:
        state = session_state(request.scope)
        try:
            token = await provider.authorize_access_token(request)
            claims = token.get("userinfo") or {}
            officer = officer_from_claims(claims, settings)
        except LoginRefused as refused:
            return back(request, "/connexion", refus=str(refused))
        except OAuthError as error:
            logger.info("login failed at the provider: %s", error.error)
            return back(request, "/connexion", refus="La connexion n'a pas abouti ; recommencez.")
        sign_in(state, officer, str(token.get("id_token", "")))
        logger.info("officer signed in (%s)", ", ".join(officer.roles))
        return RedirectResponse("/dossiers", status_code=303)

    async def logout(request: Request, officer: Officer, form: FormData) -> Response:
        state = session_state(request.scope)
        id_token = state.data.get("id_token", "")
        sign_out(state)
        metadata = await provider.load_server_metadata()
        end_session = metadata.get("end_session_endpoint")
        if end_session:
            query = urlencode(
                {
                    "id_token_hint": id_token,
                    "post_logout_redirect_uri": settings.public_url + "/connexion?au-revoir=1",
                    "client_id": settings.oidc_client_id,
                }
            )
            return RedirectResponse(f"{end_session}?{query}", status_code=303)
        return RedirectResponse("/connexion?au-revoir=1", status_code=303)

    # -- inbox ----------------------------------------------------------------------------------------------
    async def inbox(request: Request, officer: Officer) -> Response:
        multi = parse_qs(request.url.query)
        query = InboxQuery.parse(dict(request.query_params), multi)
        hub.require("contracts")
        assert hub.contracts is not None
        rows: list[contracts_pb2.CaseSummary] = []
        next_token = ""
        counts = contracts_pb2.TabCounts()
        if not query.errors:
            listed, counted = await _gather(
                hub.call(officer, "contracts", hub.contracts.ListCases, query.list_request()),
                hub.call(officer, "contracts", hub.contracts.CountCases, query.count_request()),
            )
            rows, next_token, counts = list(listed.cases), listed.next_page_token, counted.counts
        views = await store.list_views(officer.subject, officer.team)
        ghts = await _ghts(officer)
        return page.render(
            request,
            "inbox.html",
            query=query,
            rows=rows,
            next_token=next_token,
            counts=counts,
            tabs=[(key, name, tab_count(counts, key)) for key, (_, name) in TABS.items()],
            orders=ORDERS,
            assignments=ASSIGNMENTS,
            views=views,
            ghts=ghts,
            now=datetime.now(UTC),
            notice=request.query_params.get("info", ""),
            unread=await store.unread_count(officer.subject),
        )

    async def _ghts(officer: Officer) -> list[tuple[str, str]]:
        if hub.directory is None or not officer.region:
            return []
        try:
            response = await hub.call(
                officer,
                "directory",
                hub.directory.ListGhts,
                directory_pb2.ListGhtsRequest(region=f"regions/{officer.region}", page_size=500),
            )
        except ServiceError:
            return []
        return [(g.ght_id, g.display_name) for g in response.ghts]

    async def save_view(request: Request, officer: Officer, form: FormData) -> Response:
        title = str(form.get("title", "")).strip()[:100]
        query = str(form.get("query", ""))[:2000]
        if not title:
            return back(request, "/dossiers?" + query, info="Donnez un nom à la vue.")
        team = officer.team if form.get("shared") == "1" else ""
        try:
            await store.create_view(officer.subject, team, title, query)
        except Exception as error:  # the unique title per owner
            if getattr(error, "reason", "") != "VIEW_TITLE_TAKEN":
                raise
            return RedirectResponse(
                "/dossiers?" + query + "&" + urlencode({"info": "Une de vos vues porte déjà ce nom."}),
                status_code=303,
            )
        return RedirectResponse("/dossiers?" + query, status_code=303)

    async def delete_view(request: Request, officer: Officer, form: FormData) -> Response:
        try:
            view_id = uuid.UUID(request.path_params["view_id"])
        except ValueError:
            return back(request, "/dossiers")
        await store.delete_view(officer.subject, view_id)
        return back(request, "/dossiers", info="Vue supprimée.")

    async def bulk(request: Request, officer: Officer, form: FormData) -> Response:
        hub.require("contracts")
        assert hub.contracts is not None
        names = [str(n) for n in form.getlist("case") if isinstance(n, str)][:100]
        action = str(form.get("bulk_action", ""))
        query = str(form.get("query", ""))
        if not names:
            return RedirectResponse(
                "/dossiers?" + query + "&info=" + "Cochez au moins un dossier.", status_code=303
            )
        request_id = case_pages.request_id({"request_id": str(form.get("request_id", ""))})
        results: list[contracts_pb2.BatchResult] = []
        if action == "acknowledge":
            effective = (
                str(form.get("effective_date", ""))
                or datetime.now(french.zone_of(officer.region)).date().isoformat()
            )
            declarations = [n for n in names if n.startswith("operatorDeclarations/")]
            response = await hub.call(
                officer,
                "contracts",
                hub.contracts.BatchAcknowledgeOperatorDeclarations,
                contracts_pb2.BatchAcknowledgeOperatorDeclarationsRequest(
                    request_id=request_id,
                    names=declarations,
                    effective_date=case_pages.proto_date(datetime.fromisoformat(effective).date()),
                ),
            )
            results = list(response.results)
        elif action == "reassign":
            assignee = str(form.get("assignee", "")).strip()
            response = await hub.call(
                officer,
                "contracts",
                hub.contracts.ReassignCaseSteps,
                contracts_pb2.ReassignCaseStepsRequest(
                    request_id=request_id, names=names, assignee=f"staff/{assignee}"
                ),
            )
            results = list(response.results)
        else:
            return RedirectResponse("/dossiers?" + query, status_code=303)
        done = sum(1 for r in results if r.ok)
        refused = [f"{r.name} : {french.refusal(r.reason)}" for r in results if not r.ok]
        message = f"{done} dossier(s) traité(s)." + (" Refusés : " + " ; ".join(refused) if refused else "")
        return RedirectResponse(
            "/dossiers?" + query + "&" + urlencode({"info": message[:1500]}), status_code=303
        )

    # -- exports --------------------------------------------------------------------------------------------
    async def create_export(request: Request, officer: Officer, form: FormData) -> Response:
        fmt = "xlsx" if form.get("format") == "xlsx" else "csv"
        query = str(form.get("query", ""))[:2000]
        await store.create_export(officer.subject, officer.to_json(), fmt, query, settings.export_retention)
        deps.exports.nudge()
        return RedirectResponse(
            "/exports?info=" + "Export lancé : vous serez prévenu quand il sera prêt.", status_code=303
        )

    async def exports_page(request: Request, officer: Officer) -> Response:
        return page.render(
            request,
            "exports.html",
            exports=await store.exports(officer.subject),
            notice=request.query_params.get("info", ""),
            unread=await store.unread_count(officer.subject),
        )

    async def export_download(request: Request, officer: Officer) -> Response:
        try:
            export_id = uuid.UUID(request.path_params["export_id"])
        except ValueError:
            return page.render(
                request, "error.html", 404, title="Export introuvable", message="Export introuvable."
            )
        found = await store.export_file(officer.subject, export_id)
        if found is None:
            return page.render(
                request,
                "error.html",
                404,
                title="Export introuvable",
                message="Export introuvable ou pas encore prêt.",
            )
        fmt, filename, content = found
        media = (
            "text/csv; charset=utf-8"
            if fmt == "csv"
            else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        )
        return Response(
            content,
            media_type=media,
            headers={
                "Content-Disposition": f'attachment; filename="{filename}"',
                "Cache-Control": "no-store",
            },
        )

    # -- a case ---------------------------------------------------------------------------------------------
    async def case_page(request: Request, officer: Officer) -> Response:
        collection, case_id = request.path_params["collection"], request.path_params["case_id"]
        try:
            view = await case_pages.load_case(hub, officer, collection, case_id)
        except (KeyError, ValueError):
            return page.render(
                request,
                "error.html",
                404,
                title="Dossier introuvable",
                message=french.REASONS["CASE_NOT_VISIBLE"],
            )
        return page.render(
            request,
            "case.html",
            view=view,
            case=view.case,
            actions=case_pages.available_actions(view, officer),
            may_claim=case_pages.may_claim(view, officer),
            may_release=case_pages.may_release(view, officer),
            previews=case_pages.PREVIEWS,
            now=datetime.now(UTC),
            notice=request.query_params.get("info", ""),
            error=request.query_params.get("erreur", ""),
            temporal=bool(deps.temporal and settings.temporal_ui_url),
            unread=await store.unread_count(officer.subject),
        )

    def case_form(
        handler: Callable[[Request, Officer, FormData, str, str], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request, officer: Officer, form: FormData) -> Response:
            collection, case_id = request.path_params["collection"], request.path_params["case_id"]
            try:
                _, name = case_pages.case_name(collection, case_id)
            except (KeyError, ValueError):
                return page.render(
                    request,
                    "error.html",
                    404,
                    title="Dossier introuvable",
                    message=french.REASONS["CASE_NOT_VISIBLE"],
                )
            hub.require("contracts")
            try:
                return await handler(request, officer, form, name, case_pages.url_of(name))
            except ServiceError as error:
                if error.hidden:
                    raise
                return back(
                    request,
                    case_pages.url_of(name),
                    erreur=french.refusal(error.reason, error.code.name, error.violations),
                )

        return form_for(wrapped)

    async def decide(request: Request, officer: Officer, form: FormData, name: str, url: str) -> Response:
        action = case_pages.ACTIONS_BY_KEY.get(request.path_params["action"])
        if action is None:
            return back(request, url, erreur="Action inconnue.")
        if action.motivation == "required" and not str(form.get("motivation", "")).strip():
            return back(request, url, erreur=french.REASONS["MOTIVATION_REQUIRED"])
        if action.items and not str(form.get("items", "")).strip():
            return back(request, url, erreur=french.REASONS["CHANGE_ITEMS_REQUIRED"])
        values = {k: str(v) for k, v in form.items() if isinstance(v, str)}
        try:
            version = int(values.get("version", "0"))
            rpc_request = case_pages.action_request(action, name, values, version)
        except ValueError:
            return back(request, url, erreur="Une date est invalide (format AAAA-MM-JJ).")
        assert hub.contracts is not None
        await hub.call(officer, "contracts", getattr(hub.contracts, action.rpc), rpc_request)
        return back(request, url, info=f"« {action.label} » : fait.")

    async def claim(request: Request, officer: Officer, form: FormData, name: str, url: str) -> Response:
        assert hub.contracts is not None
        rpc = (
            hub.contracts.ClaimCaseStep
            if request.path_params["verb"] == "prendre"
            else hub.contracts.ReleaseCaseStep
        )
        request_class = (
            contracts_pb2.ClaimCaseStepRequest
            if request.path_params["verb"] == "prendre"
            else contracts_pb2.ReleaseCaseStepRequest
        )
        await hub.call(
            officer,
            "contracts",
            rpc,
            request_class(request_id=case_pages.request_id(_strings(form)), name=name),
        )
        return back(
            request,
            url,
            info="Dossier pris en charge."
            if request.path_params["verb"] == "prendre"
            else "Dossier rendu au groupe.",
        )

    async def comment(request: Request, officer: Officer, form: FormData, name: str, url: str) -> Response:
        assert hub.contracts is not None
        text = str(form.get("text", "")).strip()
        if not text:
            return back(request, url, erreur="Le commentaire est vide.")
        await hub.call(
            officer,
            "contracts",
            hub.contracts.AddCaseComment,
            contracts_pb2.AddCaseCommentRequest(
                request_id=case_pages.request_id(_strings(form)), parent=name, text=text
            ),
        )
        return back(request, url, info="Commentaire ajouté.")

    async def message(request: Request, officer: Officer, form: FormData, name: str, url: str) -> Response:
        assert hub.contracts is not None
        text = str(form.get("text", "")).strip()
        if not text:
            return back(request, url, erreur="Le message est vide.")
        items = [line.strip() for line in str(form.get("items", "")).splitlines() if line.strip()]
        await hub.call(
            officer,
            "contracts",
            hub.contracts.PostCaseMessage,
            contracts_pb2.PostCaseMessageRequest(
                request_id=case_pages.request_id(_strings(form)), parent=name, text=text, items=items
            ),
        )
        return back(request, url, info="Message envoyé au porteur.")

    async def add_document(
        request: Request, officer: Officer, form: FormData, name: str, url: str
    ) -> Response:
        assert hub.contracts is not None
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            return back(request, url, erreur="Choisissez un fichier.")
        content = await upload.read(MAX_UPLOAD + 1)
        if len(content) > MAX_UPLOAD:
            return back(request, url, erreur="Le fichier dépasse 10 Mio.")
        media = upload.content_type or ""
        if media not in ("application/pdf", "image/png", "image/jpeg"):
            return back(request, url, erreur="Seuls les fichiers PDF, PNG et JPEG sont acceptés.")
        document_type = str(form.get("document_type", "DOCUMENT_TYPE_OTHER"))
        if document_type not in set(contracts_pb2.DocumentType.keys()):
            document_type = "DOCUMENT_TYPE_OTHER"
        title = str(form.get("title", "")).strip() or upload.filename
        await hub.call(
            officer,
            "contracts",
            hub.contracts.CreateCaseDocument,
            contracts_pb2.CreateCaseDocumentRequest(
                request_id=case_pages.request_id(_strings(form)),
                parent=name,
                document_id="doc-" + uuid.uuid4().hex[:12],
                document_type=contracts_pb2.DocumentType.Value(document_type),
                title=title[:200],
                media_type=media,
                content=content,
            ),
        )
        return back(request, url, info="Document ajouté.")

    async def request_opinion(
        request: Request, officer: Officer, form: FormData, name: str, url: str
    ) -> Response:
        assert hub.contracts is not None
        expert = str(form.get("expert", "")).strip()
        expert = (
            expert
            if "/" in expert
            else (f"practitioners/{expert}" if expert.isdigit() else f"staff/{expert}")
        )
        try:
            due = datetime.combine(
                datetime.fromisoformat(str(form.get("due_date", ""))).date(),
                datetime.min.time(),
                french.zone_of(officer.region),
            )
        except ValueError:
            return back(request, url, erreur="L'échéance de l'avis est invalide (AAAA-MM-JJ).")
        due_time = Timestamp()
        due_time.FromDatetime(due.astimezone(UTC))
        await hub.call(
            officer,
            "contracts",
            hub.contracts.RequestCaseOpinion,
            contracts_pb2.RequestCaseOpinionRequest(
                request_id=case_pages.request_id(_strings(form)),
                parent=name,
                expert=expert,
                question=str(form.get("question", "")).strip(),
                due_time=due_time,
            ),
        )
        return back(request, url, info="Avis demandé.")

    async def give_opinion(
        request: Request, officer: Officer, form: FormData, name: str, url: str
    ) -> Response:
        assert hub.contracts is not None
        verdict = str(form.get("verdict", ""))
        if verdict not in french.VERDICTS:
            return back(request, url, erreur="Choisissez un sens d'avis.")
        await hub.call(
            officer,
            "contracts",
            hub.contracts.GiveCaseOpinion,
            contracts_pb2.GiveCaseOpinionRequest(
                request_id=case_pages.request_id(_strings(form)),
                name=f"{name}/opinions/{request.path_params['opinion_id']}",
                verdict=contracts_pb2.Verdict.Value(verdict),
                text=str(form.get("text", "")).strip(),
            ),
        )
        return back(request, url, info="Avis rendu.")

    async def mark_clause(
        request: Request, officer: Officer, form: FormData, name: str, url: str
    ) -> Response:
        assert hub.contracts is not None
        clause, status = str(form.get("clause", "")), str(form.get("status", ""))
        if (
            clause not in french.CLAUSES
            or status not in french.CLAUSE_STATUSES
            or status == "CLAUSE_STATUS_UNREVIEWED"
        ):
            return back(request, url, erreur="Choisissez une clause et une appréciation.")
        await hub.call(
            officer,
            "contracts",
            hub.contracts.MarkIntermediaryContractClause,
            contracts_pb2.MarkIntermediaryContractClauseRequest(
                request_id=case_pages.request_id(_strings(form)),
                name=name,
                clause=contracts_pb2.Clause.Value(clause),
                status=contracts_pb2.ClauseStatus.Value(status),
                note=str(form.get("note", "")).strip(),
            ),
        )
        return back(request, url, info="Clause examinée.")

    async def preview(request: Request, officer: Officer, form: FormData, name: str, url: str) -> Response:
        assert hub.contracts is not None
        key = str(form.get("for", "sign"))
        kind = case_pages.PREVIEWS.get(key, contracts_pb2.DECISION_KIND_CONTRACT_APPROVAL)
        response = await hub.call(
            officer,
            "contracts",
            hub.contracts.PreviewCaseDecision,
            contracts_pb2.PreviewCaseDecisionRequest(
                request_id=case_pages.request_id(_strings(form)),
                parent=name,
                kind=kind,
                motivation=str(form.get("motivation", "")).strip(),
            ),
        )
        return Response(
            response.decision.content,
            media_type="application/pdf",
            headers={
                "Content-Disposition": 'inline; filename="apercu-decision.pdf"',
                "Cache-Control": "no-store",
            },
        )

    async def document(request: Request, officer: Officer) -> Response:
        hub.require("contracts")
        assert hub.contracts is not None
        collection, case_id = request.path_params["collection"], request.path_params["case_id"]
        try:
            _, name = case_pages.case_name(collection, case_id)
        except (KeyError, ValueError):
            return page.render(
                request, "error.html", 404, title="Document introuvable", message="Document introuvable."
            )
        doc = request.path_params["document_id"]
        if request.path_params.get("kind") == "decisions":
            response = await hub.call(
                officer,
                "contracts",
                hub.contracts.GetCaseDecision,
                contracts_pb2.GetCaseDecisionRequest(name=f"{name}/decisions/{doc}"),
            )
            content, media, filename = (
                response.decision.content,
                response.decision.media_type or "application/pdf",
                f"decision-{response.decision.reference or doc}.pdf",
            )
        else:
            got = await hub.call(
                officer,
                "contracts",
                hub.contracts.GetCaseDocument,
                contracts_pb2.GetCaseDocumentRequest(name=f"{name}/documents/{doc}"),
            )
            content, media, filename = (
                got.document.content,
                got.document.media_type,
                doc
                + {"application/pdf": ".pdf", "image/png": ".png", "image/jpeg": ".jpg"}.get(
                    got.document.media_type, ""
                ),
            )
        disposition = "attachment" if "telecharger" in request.query_params else "inline"
        return Response(
            content,
            media_type=media,
            headers={
                "Content-Disposition": f'{disposition}; filename="{filename}"',
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def open_in_temporal(request: Request, officer: Officer) -> Response:
        client = await deps.temporal() if deps.temporal is not None and settings.temporal_ui_url else None
        if client is None:
            return page.render(
                request,
                "error.html",
                404,
                title="Temporal non raccordé",
                message="L'interface Temporal n'est pas raccordée à cette console.",
            )
        view = await case_pages.load_case(
            hub, officer, request.path_params["collection"], request.path_params["case_id"]
        )
        workflow_id = view.workflow_id
        region = await codec_endpoint.workflow_region(client, workflow_id)
        case_region = view.case.region.removeprefix("regions/") if hasattr(view.case, "region") else None
        if (
            region is None
            or (officer.region and region != officer.region)
            or (case_region and region != case_region)
        ):
            return page.render(
                request,
                "error.html",
                404,
                title="Dossier introuvable",
                message=french.REASONS["CASE_NOT_VISIBLE"],
            )
        digests = await codec_endpoint.history_digests(client, workflow_id)
        codec_endpoint.add_grant(
            session_state(request.scope).data,
            workflow_id,
            digests,
            datetime.now(UTC) + settings.codec_grant_ttl,
        )
        ui = settings.temporal_ui_url.rstrip("/")
        target = f"{ui}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"
        return RedirectResponse(target, status_code=303)

    # -- codec ----------------------------------------------------------------------------------------------
    def cors(request: Request) -> dict[str, str]:
        origin = request.headers.get("origin", "")
        allowed = settings.temporal_ui_url.rstrip("/")
        headers = {"Vary": "Origin", "Cache-Control": "no-store"}
        if allowed and origin.rstrip("/") == allowed:
            headers.update(
                {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}
            )
        return headers

    async def codec(request: Request) -> Response:
        headers = cors(request)
        if request.method == "OPTIONS":
            headers.update(
                {
                    "Access-Control-Allow-Methods": "POST, OPTIONS",
                    "Access-Control-Allow-Headers": "Content-Type, X-Namespace, Authorization",
                    "Access-Control-Max-Age": "600",
                }
            )
            return Response(status_code=204, headers=headers)
        if not request.url.path.rstrip("/").endswith("/decode"):
            return PlainTextResponse("only POST .../decode is served\n", status_code=404, headers=headers)
        if deps.codec is None:
            return PlainTextResponse("the codec is not configured\n", status_code=404, headers=headers)
        state = session_state(request.scope)
        if signed_in(state) is None:
            return PlainTextResponse("sign in to the console first\n", status_code=401, headers=headers)
        body = await request.body()
        if len(body) > 16 * 1024 * 1024:
            return PlainTextResponse("body too large\n", status_code=413, headers=headers)
        try:
            client = await deps.temporal() if deps.temporal is not None else None
            decoded = await codec_endpoint.decode(body, state.data, deps.codec, client)
        except codec_endpoint.CodecRefused as refused:
            return PlainTextResponse(refused.message + "\n", status_code=refused.status, headers=headers)
        return Response(decoded, media_type="application/json", headers=headers)

    # -- dashboards -----------------------------------------------------------------------------------------
    async def pilotage(request: Request, officer: Officer) -> Response:
        charts = await dashboards.build(hub, officer)
        return page.render(
            request, "dashboards.html", charts=charts, unread=await store.unread_count(officer.subject)
        )

    async def chart_csv(request: Request, officer: Officer) -> Response:
        key = request.path_params["key"]
        if key not in dashboards.CHARTS:
            return page.render(
                request, "error.html", 404, title="Graphique introuvable", message="Graphique introuvable."
            )
        charts = {c.key: c for c in await dashboards.build(hub, officer)}
        chart = charts[key]
        return Response(
            "\ufeff" + chart.csv(),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="pilotage-{key}.csv"',
                "Cache-Control": "no-store",
            },
        )

    # -- notifications and preferences ----------------------------------------------------------------------
    async def notifications(request: Request, officer: Officer) -> Response:
        items = await store.notifications(officer.subject)
        return page.render(
            request, "notifications.html", items=items, unread=await store.unread_count(officer.subject)
        )

    async def notifications_read(request: Request, officer: Officer, form: FormData) -> Response:
        await store.mark_read(officer.subject)
        return back(request, "/notifications")

    async def preferences(request: Request, officer: Officer) -> Response:
        return page.render(
            request,
            "preferences.html",
            prefs=await store.preferences(officer.subject),
            events=EVENT_LABELS,
            email=officer.email,
            saved="enregistre" in request.query_params,
            unread=await store.unread_count(officer.subject),
        )

    async def save_preferences(request: Request, officer: Officer, form: FormData) -> Response:
        chosen = {
            event: (form.get(f"{event}-app") == "1", form.get(f"{event}-email") == "1") for event in EVENTS
        }
        await store.set_preferences(officer.subject, chosen)
        return back(request, "/preferences", enregistre="1")

    async def home(request: Request) -> Response:
        return RedirectResponse("/dossiers", status_code=303)

    assets = settings.console_assets_dir
    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/connexion", login_page),
        Route("/connexion/demarrer", login_start),
        Route("/connexion/retour", login_return),
        Route("/deconnexion", form_for(logout), methods=["POST"]),
        Route("/dossiers", page_for(inbox)),
        Route("/dossiers/vues", form_for(save_view), methods=["POST"]),
        Route("/dossiers/vues/{view_id}/supprimer", form_for(delete_view), methods=["POST"]),
        Route("/dossiers/lot", form_for(bulk), methods=["POST"]),
        Route("/dossiers/export", form_for(create_export), methods=["POST"]),
        Route("/exports", page_for(exports_page)),
        Route("/exports/{export_id}", page_for(export_download)),
        Route("/dossiers/{collection}/{case_id}", page_for(case_page)),
        Route("/dossiers/{collection}/{case_id}/temporal", page_for(open_in_temporal)),
        Route("/dossiers/{collection}/{case_id}/actions/{action}", case_form(decide), methods=["POST"]),
        Route("/dossiers/{collection}/{case_id}/etape/{verb:str}", case_form(claim), methods=["POST"]),
        Route("/dossiers/{collection}/{case_id}/commentaires", case_form(comment), methods=["POST"]),
        Route("/dossiers/{collection}/{case_id}/messages", case_form(message), methods=["POST"]),
        Route("/dossiers/{collection}/{case_id}/documents", case_form(add_document), methods=["POST"]),
        Route("/dossiers/{collection}/{case_id}/avis", case_form(request_opinion), methods=["POST"]),
        Route(
            "/dossiers/{collection}/{case_id}/avis/{opinion_id}", case_form(give_opinion), methods=["POST"]
        ),
        Route("/dossiers/{collection}/{case_id}/clauses", case_form(mark_clause), methods=["POST"]),
        Route("/dossiers/{collection}/{case_id}/apercu", case_form(preview), methods=["POST"]),
        Route("/dossiers/{collection}/{case_id}/{kind:str}/{document_id}", page_for(document)),
        Route("/pilotage", page_for(pilotage)),
        Route("/pilotage/{key}.csv", page_for(chart_csv)),
        Route("/notifications", page_for(notifications)),
        Route("/notifications/lues", form_for(notifications_read), methods=["POST"]),
        Route("/preferences", page_for(preferences)),
        Route("/preferences", form_for(save_preferences), methods=["POST"]),
        Route("/codec/{path:path}", codec, methods=["POST", "OPTIONS"]),
        Mount("/static/dsfr", StaticFiles(directory=assets / "@gouvfr" / "dsfr" / "dist", check_dir=False)),
        Mount("/static/chart", StaticFiles(directory=assets / "chart.js" / "dist", check_dir=False)),
        Mount("/static/console", StaticFiles(directory=HERE / "static")),
    ]
    return Starlette(
        routes=routes, middleware=[Middleware(SessionMiddleware, store=store, settings=settings)]
    )


def _strings(form: FormData) -> dict[str, str]:
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def _gather(*calls: Awaitable[Any]) -> list[Any]:
    import asyncio

    return list(await asyncio.gather(*calls))
