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
