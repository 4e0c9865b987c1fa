{{/*
Names and labels. Every object is named "<fullname>-<part>" and carries the standard app.kubernetes.io labels;
a component's pods are selected by instance + component.
*/}}

{{- define "parcours.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "parcours.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<part>"; dict "ctx" $ "part" "directory" */}}
{{- define "parcours.objectName" -}}
{{- printf "%s-%s" (include "parcours.fullname" .ctx) .part | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "parcours.chartLabel" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one part of the release (a component, a hook, the tests); dict "ctx" $ "part" name */}}
{{- define "parcours.selectorLabels" -}}
app.kubernetes.io/name: {{ include "parcours.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .part }}
{{- end -}}

{{/* Every object's labels; dict "ctx" $ "part" name */}}
{{- define "parcours.labels" -}}
{{ include "parcours.selectorLabels" . }}
app.kubernetes.io/part-of: parcours
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ include "parcours.chartLabel" .ctx }}
{{- end -}}

{{/* Labels selecting every pod of the release (the default-deny policy) */}}
{{- define "parcours.releaseSelector" -}}
app.kubernetes.io/name: {{ include "parcours.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "parcours.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* The enabled components, as a dict name → block (blocks with enabled: false are left out). */}}
{{- define "parcours.components" -}}
{{- $out := dict -}}
{{- range $name, $c := .Values.components -}}
{{- if ne (toString (dig "enabled" true $c)) "false" -}}
{{- $_ := set $out $name $c -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* A Service's in-cluster DNS name; dict "ctx" $ "part" name */}}
{{- define "parcours.serviceHost" -}}
{{- printf "%s.%s.svc" (include "parcours.objectName" .) .ctx.Release.Namespace -}}
{{- end -}}

{{/* The Secret of a component's mTLS material; dict "ctx" $ "name" n "component" c */}}
{{- define "parcours.tlsSecretName" -}}
{{- $tls := default dict .component.tls -}}
{{- default (printf "%s-tls" (include "parcours.objectName" (dict "ctx" .ctx "part" .name))) $tls.existingSecret -}}
{{- end -}}

{{/*
Database credentials of a part (a component or the migrations Job): its own `database` block over
postgresql.auth. Returns YAML {username, secretName, passwordKey}; dict "ctx" $ "part" name "database" block.
A password given in values is rendered into the chart's Secret "<fullname>-db-<part>" (or "<fullname>-db"
for the shared credentials).
*/}}
{{- define "parcours.dbCredentials" -}}
{{- $auth := .ctx.Values.postgresql.auth -}}
{{- $own := default dict .database -}}
{{- $username := default $auth.username $own.username -}}
{{- $key := default $auth.passwordKey $own.passwordKey -}}
{{- $secret := "" -}}
{{- if $own.existingSecret -}}
{{- $secret = $own.existingSecret -}}
{{- else if $own.password -}}
{{- $secret = include "parcours.objectName" (dict "ctx" .ctx "part" (printf "db-%s" .part)) -}}
{{- $key = "password" -}}
{{- else if $auth.existingSecret -}}
{{- $secret = $auth.existingSecret -}}
{{- else if $auth.password -}}
{{- $secret = include "parcours.objectName" (dict "ctx" .ctx "part" "db") -}}
{{- $key = "password" -}}
{{- else -}}
{{- fail (printf "no database password for %s: set postgresql.auth.existingSecret (or a database block's existingSecret)" .part) -}}
{{- end -}}
username: {{ $username | quote }}
secretName: {{ $secret | quote }}
passwordKey: {{ $key | quote }}
{{- end -}}

{{/* PostgreSQL URI without password (libpq and asyncpg read PGPASSWORD); dict "ctx" $ "username" u */}}
{{- define "parcours.databaseUrl" -}}
{{- $pg := .ctx.Values.postgresql -}}
{{- $query := list (printf "sslmode=%s" $pg.tls.sslMode) -}}
{{- if $pg.tls.caSecret.name -}}
{{- $query = append $query (printf "sslrootcert=/etc/parcours/postgresql/%s" $pg.tls.caSecret.key) -}}
{{- end -}}
{{- printf "postgresql://%s@%s:%d/%s?%s" (urlquery .username) $pg.host (int $pg.port) $pg.database (join "&" $query) -}}
{{- end -}}

{{/* Env of a process that connects to PostgreSQL; dict "ctx" $ "part" name "database" block */}}
{{- define "parcours.databaseEnv" -}}
{{- $cred := include "parcours.dbCredentials" . | fromYaml -}}
- name: PARCOURS_DATABASE_URL
  value: {{ include "parcours.databaseUrl" (dict "ctx" .ctx "username" $cred.username) | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $cred.secretName }}
      key: {{ $cred.passwordKey }}
{{- end -}}

{{/*
Env of the database roles Job: the administrator's URL and password, and each role's password from the
credentials of the parts that connect as it (the migrations: parcours_owner; each component: its role), plus
the auditor's from the shared Secret's `auditor` key when present. A role named by none keeps its password.
*/}}
{{- define "parcours.databaseRolesEnv" -}}
{{- $ctx := .ctx -}}
{{- $admin := $ctx.Values.databaseRoles.admin -}}
- name: PARCOURS_DB_ADMIN_URL
  value: {{ include "parcours.databaseUrl" (dict "ctx" $ctx "username" $admin.username) | quote }}
- name: PARCOURS_DB_NAME
  value: {{ $ctx.Values.postgresql.database | quote }}
- name: PGPASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $admin.existingSecret }}
      key: {{ $admin.passwordKey }}
{{- $seen := dict -}}
{{- $parts := list (dict "part" "migrations" "database" $ctx.Values.migrations.database) -}}
{{- $components := include "parcours.components" $ctx | fromYaml -}}
{{- range $name := keys $components | sortAlpha -}}
{{- $parts = append $parts (dict "part" $name "database" (get $components $name).database) -}}
{{- end -}}
{{- range $parts -}}
{{- $cred := include "parcours.dbCredentials" (dict "ctx" $ctx "part" .part "database" .database) | fromYaml -}}
{{- if and (hasPrefix "parcours_" $cred.username) (not (hasKey $seen $cred.username)) -}}
{{- $_ := set $seen $cred.username true }}
- name: PARCOURS_DB_PASSWORD_{{ $cred.username | trimPrefix "parcours_" | upper }}
  valueFrom:
    secretKeyRef:
      name: {{ $cred.secretName }}
      key: {{ $cred.passwordKey }}
{{- end -}}
{{- end -}}
{{- if and $ctx.Values.postgresql.auth.existingSecret (not (hasKey $seen "parcours_auditor")) }}
- name: PARCOURS_DB_PASSWORD_AUDITOR
  valueFrom:
    secretKeyRef:
      name: {{ $ctx.Values.postgresql.auth.existingSecret }}
      key: auditor
      optional: true
{{- end }}
{{- end -}}

{{/* Volume and mount of the PostgreSQL server CA, when one is configured */}}
{{- define "parcours.postgresqlCaVolume" -}}
{{- if .Values.postgresql.tls.caSecret.name }}
- name: postgresql-ca
  secret:
    secretName: {{ .Values.postgresql.tls.caSecret.name }}
    defaultMode: 0440
    items:
      - key: {{ .Values.postgresql.tls.caSecret.key }}
        path: {{ .Values.postgresql.tls.caSecret.key }}
{{- end }}
{{- end -}}

{{- define "parcours.postgresqlCaMount" -}}
{{- if .Values.postgresql.tls.caSecret.name }}
- name: postgresql-ca
  mountPath: /etc/parcours/postgresql
  readOnly: true
{{- end }}
{{- end -}}

{{/* OpenTelemetry env; dict "ctx" $ "part" name */}}
{{- define "parcours.otelEnv" -}}
{{- $otel := .ctx.Values.otel -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
{{- $attrs := list (printf "k8s.namespace.name=%s" .ctx.Release.Namespace) "k8s.pod.name=$(POD_NAME)" "k8s.node.name=$(NODE_NAME)" (printf "k8s.deployment.name=%s" (include "parcours.objectName" .)) (printf "service.version=%s" .ctx.Chart.AppVersion) -}}
{{- range $k, $v := $otel.resourceAttributes }}
{{- $attrs = append $attrs (printf "%s=%s" $k $v) -}}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ join "," $attrs | quote }}
{{- if $otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ $otel.endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
{{- if $otel.headers.existingSecret }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ $otel.headers.existingSecret }}
      key: {{ $otel.headers.key }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Pod-level scheduling settings shared by every Deployment */}}
{{- define "parcours.podScheduling" -}}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end -}}

{{/* The emptyDir on /tmp: the only writable path of a container */}}
{{- define "parcours.tmpVolume" -}}
- name: tmp
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}

{{/*
checkov skips of an object running pods, each with its reason (checkov reads the checkov.io/skipN annotations).
dict "ctx" $ "secretEnv" bool "noProbes" reason-or-"" ; only the skips that apply to the object are written.
*/}}
{{- define "parcours.checkovSkips" -}}
{{- $skips := list -}}
{{- if not .ctx.Values.image.digest -}}
{{- $skips = append $skips "CKV_K8S_43=The image is addressed by tag until image.digest is set; the release pipeline sets the digest of the image it scanned" -}}
{{- end -}}
{{- if .secretEnv -}}
{{- $skips = append $skips "CKV_K8S_35=The kit reads its keys (payload keyring, page-token, join-token and webhook keys, SMTP password) from the environment only and libpq/asyncpg read PGPASSWORD; all come from Secrets by reference, never from values" -}}
{{- end -}}
{{- with .noProbes -}}
{{- $skips = append $skips (printf "CKV_K8S_8=%s" .) -}}
{{- $skips = append $skips (printf "CKV_K8S_9=%s" .) -}}
{{- end -}}
{{- if not .ctx.Values.networkPolicy.enabled -}}
{{- $skips = append $skips "CKV2_K8S_6=networkPolicy.enabled is false: the operator isolates the release by other means (a service mesh or the namespace's own policies)" -}}
{{- end -}}
{{- range $i, $skip := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $skip | quote }}
{{- end -}}
{{- end -}}

{{/*
Notifications (services/kit/notify.py): what a component with `notifications: true` gets. Its files (the
address book, the relay's CA, the client certificate at the relay) come in one projected volume on
/etc/parcours/notify, from the Secrets and ConfigMaps that hold them.
*/}}

{{/* Where the address book comes from: YAML {kind: configMap|secret|inline|"", name, key} */}}
{{- define "parcours.addressBook" -}}
{{- $book := .Values.notifications.addressBook -}}
{{- $sources := list -}}
{{- if $book.existingConfigMap }}{{ $sources = append $sources "existingConfigMap" }}{{ end -}}
{{- if $book.existingSecret }}{{ $sources = append $sources "existingSecret" }}{{ end -}}
{{- if or $book.emails $book.webhooks }}{{ $sources = append $sources "emails/webhooks" }}{{ end -}}
{{- if gt (len $sources) 1 -}}
{{- fail (printf "notifications.addressBook: give one of existingConfigMap, existingSecret or inline emails/webhooks, not %s" (join " and " $sources)) -}}
{{- end -}}
{{- if $book.existingConfigMap -}}
kind: configMap
name: {{ $book.existingConfigMap | quote }}
key: {{ $book.key | quote }}
{{- else if $book.existingSecret -}}
kind: secret
name: {{ $book.existingSecret | quote }}
key: {{ $book.key | quote }}
{{- else if or $book.emails $book.webhooks -}}
kind: inline
name: {{ include "parcours.objectName" (dict "ctx" . "part" "address-book") | quote }}
key: address-book.json
{{- else -}}
kind: ""
{{- end -}}
{{- end -}}

{{/* The address book file of inline entries, as services/kit/notify.py FileAddressBook reads it */}}
{{- define "parcours.addressBookJson" -}}
{{- $book := .Values.notifications.addressBook -}}
{{- $webhooks := dict -}}
{{- range $establishment, $w := $book.webhooks -}}
{{- $_ := set $webhooks $establishment (dict "url" $w.url "key_id" $w.keyId) -}}
{{- end -}}
{{- toPrettyJson (dict "emails" (default dict $book.emails) "webhooks" $webhooks) -}}
{{- end -}}

{{/* The SMTP relay's settings: for the notifying workers, and for a component with `sendsMail` (the
console's officers' e-mails), which gets nothing else of the notifications block. */}}
{{- define "parcours.smtpEnv" -}}
{{- $smtp := .Values.notifications.smtp -}}
{{- if $smtp.host }}
- name: PARCOURS_SMTP_HOST
  value: {{ $smtp.host | quote }}
- name: PARCOURS_SMTP_PORT
  value: {{ $smtp.port | quote }}
- name: PARCOURS_SMTP_TLS
  value: {{ $smtp.tls | quote }}
- name: PARCOURS_SMTP_FROM
  value: {{ $smtp.from | quote }}
- name: PARCOURS_SMTP_TIMEOUT_SECONDS
  value: {{ $smtp.timeoutSeconds | quote }}
{{- if $smtp.username }}
- name: PARCOURS_SMTP_USERNAME
  value: {{ $smtp.username | quote }}
- name: PARCOURS_SMTP_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $smtp.password.existingSecret }}
      key: {{ $smtp.password.key }}
{{- end }}
{{- if $smtp.ca.existingSecret }}
- name: PARCOURS_SMTP_CA_FILE
  value: /etc/parcours/notify/smtp-ca.crt
{{- end }}
{{- if $smtp.clientCertificate.existingSecret }}
- name: PARCOURS_SMTP_CERT_FILE
  value: /etc/parcours/notify/smtp-client.crt
- name: PARCOURS_SMTP_KEY_FILE
  value: /etc/parcours/notify/smtp-client.key
{{- end }}
{{- end }}
{{- end -}}

{{- define "parcours.notificationsEnv" -}}
{{- $n := .Values.notifications -}}
{{- include "parcours.smtpEnv" . }}
{{- if (include "parcours.addressBook" . | fromYaml).kind }}
- name: PARCOURS_NOTIFY_ADDRESS_BOOK
  value: /etc/parcours/notify/address-book.json
{{- end }}
{{- if $n.webhooks.keys.existingSecret }}
- name: PARCOURS_NOTIFY_WEBHOOK_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $n.webhooks.keys.existingSecret }}
      key: {{ $n.webhooks.keys.key }}
{{- end }}
- name: PARCOURS_WEBHOOK_TIMEOUT_SECONDS
  value: {{ $n.webhooks.timeoutSeconds | quote }}
{{- end -}}

{{/* The projected volume of the notification files ("" when there is none) */}}
{{- define "parcours.notificationsVolume" -}}
{{- include "parcours.notifyFiles" (dict "ctx" . "book" true) -}}
{{- end -}}

{{/* The SMTP relay's files only (a `sendsMail` component) */}}
{{- define "parcours.mailVolume" -}}
{{- include "parcours.notifyFiles" (dict "ctx" . "book" false) -}}
{{- end -}}

{{/* dict "ctx" $ "book" bool: the projected volume of the notification files, the address book included
when "book" ("" when there is nothing to mount) */}}
{{- define "parcours.notifyFiles" -}}
{{- $smtp := .ctx.Values.notifications.smtp -}}
{{- $book := dict "kind" "" -}}
{{- if .book }}{{ $book = include "parcours.addressBook" .ctx | fromYaml }}{{ end -}}
{{- $sources := list -}}
{{- if eq $book.kind "configMap" "inline" -}}
{{- $sources = append $sources (dict "configMap" (dict "name" $book.name "items" (list (dict "key" $book.key "path" "address-book.json")))) -}}
{{- else if eq $book.kind "secret" -}}
{{- $sources = append $sources (dict "secret" (dict "name" $book.name "items" (list (dict "key" $book.key "path" "address-book.json")))) -}}
{{- end -}}
{{- if and $smtp.host $smtp.ca.existingSecret -}}
{{- $sources = append $sources (dict "secret" (dict "name" $smtp.ca.existingSecret "items" (list (dict "key" $smtp.ca.key "path" "smtp-ca.crt")))) -}}
{{- end -}}
{{- if and $smtp.host $smtp.clientCertificate.existingSecret -}}
{{- $cert := $smtp.clientCertificate -}}
{{- $sources = append $sources (dict "secret" (dict "name" $cert.existingSecret "items" (list (dict "key" $cert.certKey "path" "smtp-client.crt") (dict "key" $cert.keyKey "path" "smtp-client.key")))) -}}
{{- end -}}
{{- if $sources -}}
- name: notify
  projected:
    defaultMode: 0440
    sources:
      {{- toYaml $sources | nindent 6 }}
{{- end -}}
{{- end -}}

{{/* Join links: the video bridge's page and the key every teleconsultation worker signs with */}}
{{- define "parcours.joinLinksEnv" -}}
- name: PARCOURS_JOIN_BASE_URL
  value: {{ .Values.joinLinks.baseUrl | quote }}
- name: PARCOURS_JOIN_TOKEN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.joinLinks.tokenKey.existingSecret }}
      key: {{ .Values.joinLinks.tokenKey.key }}
{{- end -}}

{{/* A named egress allow: components of this release to ports (of peers `to`; none: any address). */}}
{{- define "parcours.egressPolicy" -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "parcours.objectName" (dict "ctx" .ctx "part" .part) }}
  namespace: {{ .ctx.Release.Namespace }}
  labels:
    {{- include "parcours.labels" (dict "ctx" .ctx "part" "network-policy") | nindent 4 }}
spec:
  podSelector:
    matchExpressions:
      - {key: app.kubernetes.io/instance, operator: In, values: [{{ .ctx.Release.Name | quote }}]}
      - {key: app.kubernetes.io/component, operator: In, values: {{ toJson .components }}}
  policyTypes: [Egress]
  egress:
    - ports:
        {{- range .ports }}
        - {port: {{ . }}, protocol: TCP}
        {{- end }}
      {{- with .to }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end }}
