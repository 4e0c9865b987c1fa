{{/* Values the schema cannot express (they depend on each other): fail early with the key's name. */}}
{{- define "parcours.validate" -}}
{{- $v := .Values -}}
{{- $components := include "parcours.components" . | fromYaml -}}
{{- if not $v.postgresql.host -}}{{- fail "postgresql.host is required (the external PostgreSQL)" -}}{{- end -}}
{{- if and (has $v.postgresql.tls.sslMode (list "verify-ca" "verify-full")) (not $v.postgresql.tls.caSecret.name) -}}
{{- fail (printf "postgresql.tls.caSecret.name is required with sslMode %s" $v.postgresql.tls.sslMode) -}}
{{- end -}}
{{- if not $v.tokens.issuer -}}{{- fail "tokens.issuer is required (the token issuer URL)" -}}{{- end -}}
{{- if not $v.tokens.jwks.existingSecret -}}{{- fail "tokens.jwks.existingSecret is required (the Secret holding the JWKS)" -}}{{- end -}}
{{- $grpc := false -}}
{{- range $name, $c := $components -}}{{- if $c.grpcPort -}}{{- $grpc = true -}}{{- end -}}{{- end -}}
{{- if and $grpc (not $v.pageTokens.existingSecret) -}}
{{- fail "pageTokens.existingSecret is required (the Secret holding the page-token HMAC key)" -}}
{{- end -}}
{{- if and $grpc (not $v.audit.keys.existingSecret) -}}
{{- fail "audit.keys.existingSecret is required (the Secret holding the audit chains' HMAC keys)" -}}
{{- end -}}
{{- if and $grpc $v.audit.anchors.enabled (not $v.audit.anchors.existingClaim) -}}
{{- fail "audit.anchors.existingClaim is required (the volume the audit chains are anchored in), or set audit.anchors.enabled to false" -}}
{{- end -}}
{{- if $v.databaseRoles.enabled -}}
{{- if not $v.databaseRoles.admin.username -}}{{- fail "databaseRoles.admin.username is required when databaseRoles.enabled (a role with CREATEROLE)" -}}{{- end -}}
{{- if not $v.databaseRoles.admin.existingSecret -}}{{- fail "databaseRoles.admin.existingSecret is required when databaseRoles.enabled" -}}{{- end -}}
{{- end -}}
{{- $temporal := false -}}
{{- range $name, $c := $components -}}{{- if $c.temporal -}}{{- $temporal = true -}}{{- end -}}{{- end -}}
{{- if or $temporal $v.temporal.setup.enabled -}}
{{- if not $v.temporal.address -}}{{- fail "temporal.address is required (host:port of the Temporal frontend)" -}}{{- end -}}
{{- end -}}
{{- if and $temporal (not $v.temporal.payloadKeys.existingSecret) -}}
{{- fail "temporal.payloadKeys.existingSecret is required (the payload encryption keyring)" -}}
{{- end -}}
{{- $signing := false -}}
{{- range $name, $c := $components -}}{{- if $c.decisionSigning -}}{{- $signing = true -}}{{- end -}}{{- end -}}
{{- if and $signing (not $v.decisionSigning.existingSecret) -}}
{{- fail "decisionSigning.existingSecret is required (the Secret holding the decision-signing certificate, key and trust roots)" -}}
{{- end -}}
{{- if and $v.certManager.enabled (not $v.certManager.issuerRef.name) -}}
{{- fail "certManager.issuerRef.name is required when certManager.enabled" -}}
{{- end -}}
{{- if $v.ingress.enabled -}}
{{- if not $v.ingress.host -}}{{- fail "ingress.host is required when ingress.enabled" -}}{{- end -}}
{{- if not $v.ingress.tls.secretName -}}{{- fail "ingress.tls.secretName is required when ingress.enabled (HTTPS only)" -}}{{- end -}}
{{- end -}}
{{- $joinLinks := false -}}
{{- range $name, $c := $components -}}{{- if $c.joinLinks -}}{{- $joinLinks = true -}}{{- end -}}{{- end -}}
{{- if $joinLinks -}}
{{- if not $v.joinLinks.baseUrl -}}
{{- fail "joinLinks.baseUrl is required (the video bridge's join page, https://…; a join link is <baseUrl>/<token>)" -}}
{{- end -}}
{{- if not $v.joinLinks.tokenKey.existingSecret -}}
{{- fail "joinLinks.tokenKey.existingSecret is required (the Secret holding the join-token HMAC key, base64url of at least 32 random bytes): without one key shared by every teleconsultation worker, each process signs with a random key of its own and a retried delivery sends a different link" -}}
{{- end -}}
{{- end -}}
{{- $n := $v.notifications -}}
{{- if and (eq $n.smtp.tls "none") (not $n.allowPlaintext) -}}
{{- fail "notifications.smtp.tls none sends e-mail in clear: use starttls or implicit (an MSSanté relay requires TLS), or set notifications.allowPlaintext: true on a development cluster" -}}
{{- end -}}
{{- if $n.smtp.host -}}
{{- if and $n.smtp.username (not $n.smtp.password.existingSecret) -}}
{{- fail "notifications.smtp.password.existingSecret is required with notifications.smtp.username" -}}
{{- end -}}
{{- if and $n.smtp.password.existingSecret (not $n.smtp.username) -}}
{{- fail "notifications.smtp.username is required with notifications.smtp.password" -}}
{{- end -}}
{{- end -}}
{{- /* one source of the address book at most (the helper fails otherwise) */ -}}
{{- $_ := include "parcours.addressBook" . -}}
{{- if and $n.addressBook.webhooks (not $n.webhooks.keys.existingSecret) -}}
{{- fail "notifications.webhooks.keys.existingSecret is required: notifications.addressBook.webhooks names endpoints, each signed with a key of that Secret" -}}
{{- end -}}
{{- range $establishment, $w := $n.addressBook.webhooks -}}
{{- if and (hasPrefix "http://" $w.url) (not $n.allowPlaintext) -}}
{{- fail (printf "notifications.addressBook.webhooks[%s].url must be https:// (events carry join links), or set notifications.allowPlaintext: true on a development cluster" $establishment) -}}
{{- end -}}
{{- end -}}
{{- range $name, $c := $components -}}
{{- $given := dict -}}
{{- range $k, $val := $c.env -}}{{- if $val -}}{{- $_ := set $given $k true -}}{{- end -}}{{- end -}}
{{- range $c.secretEnv -}}{{- $_ := set $given .name true -}}{{- end -}}
{{- range $c.requiredEnv -}}
{{- if not (hasKey $given .) -}}
{{- fail (printf "components.%s.env.%s is required (or a secretEnv entry of that name)" $name .) -}}
{{- end -}}
{{- end -}}
{{- $public := dig "env" "PARCOURS_CONSOLE_PUBLIC_URL" "" $c -}}
{{- if and $public (not (hasPrefix "https://" $public)) (ne (toString (dig "env" "PARCOURS_COOKIE_SECURE" "true" $c)) "false") -}}
{{- fail (printf "components.%s.env.PARCOURS_CONSOLE_PUBLIC_URL must be https://… (the session cookie is Secure; the Ingress serves HTTPS only)" $name) -}}
{{- end -}}
{{- end -}}
{{- range $name, $c := $components -}}
{{- if and (not $c.grpcPort) (not $c.temporal) (not $c.httpPort) -}}
{{- fail (printf "components.%s has neither a grpcPort, an httpPort nor temporal: true" $name) -}}
{{- end -}}
{{- with $c.autoscaling -}}
{{- if and .enabled (gt (int .minReplicas) (int .maxReplicas)) -}}
{{- fail (printf "components.%s.autoscaling.minReplicas > maxReplicas" $name) -}}
{{- end -}}
{{- if and .enabled .backlog (dig "enabled" false .backlog) (not $c.taskQueue) -}}
{{- fail (printf "components.%s.autoscaling.backlog needs components.%s.taskQueue" $name $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
