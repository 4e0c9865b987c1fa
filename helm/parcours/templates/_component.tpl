{{/*
The objects of one component, rendered from its values block by components.yaml:
  include "parcours.component.deployment" (dict "ctx" $ "name" "directory" "c" $block)
No component has a template of its own.
*/}}

{{- define "parcours.component.meta" -}}
name: {{ include "parcours.objectName" (dict "ctx" .ctx "part" .name) }}
namespace: {{ .ctx.Release.Namespace }}
labels:
  {{- include "parcours.labels" (dict "ctx" .ctx "part" .name) | nindent 2 }}
{{- end -}}

{{/* PARCOURS_* settings of a component (its env), also hashed into checksum/config */}}
{{- define "parcours.component.env" -}}
{{- $ctx := .ctx -}}{{- $c := .c -}}
{{- $components := include "parcours.components" $ctx | fromYaml -}}
- name: PARCOURS_COMPONENT
  value: {{ .name | quote }}
- name: PARCOURS_LOG_LEVEL
  value: {{ $ctx.Values.logLevel | quote }}
{{- if $c.grpcPort }}
- name: PARCOURS_GRPC_PORT
  value: {{ $c.grpcPort | quote }}
- name: PARCOURS_HEALTH_PORT
  value: {{ $ctx.Values.healthPort | quote }}
{{- end }}
{{ include "parcours.databaseEnv" (dict "ctx" $ctx "part" .name "database" $c.database) }}
{{- with $c.database }}
{{- if .poolMinSize }}
- name: PARCOURS_DB_POOL_MIN_SIZE
  value: {{ .poolMinSize | quote }}
{{- end }}
{{- if .poolMaxSize }}
- name: PARCOURS_DB_POOL_MAX_SIZE
  value: {{ .poolMaxSize | quote }}
{{- end }}
{{- end }}
- name: PARCOURS_TLS_CERT_FILE
  value: /etc/parcours/tls/tls.crt
- name: PARCOURS_TLS_KEY_FILE
  value: /etc/parcours/tls/tls.key
- name: PARCOURS_TLS_CA_FILE
  value: /etc/parcours/tls/ca.crt
- name: PARCOURS_TOKEN_JWKS_FILE
  value: /etc/parcours/tokens/{{ $ctx.Values.tokens.jwks.key }}
- name: PARCOURS_TOKEN_ISSUER
  value: {{ $ctx.Values.tokens.issuer | quote }}
- name: PARCOURS_TOKEN_AUDIENCE
  value: {{ $ctx.Values.tokens.audience | quote }}
- name: PARCOURS_TOKEN_LEEWAY_SECONDS
  value: {{ $ctx.Values.tokens.leewaySeconds | quote }}
{{- if $c.grpcPort }}
- name: PARCOURS_PAGE_TOKEN_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $ctx.Values.pageTokens.existingSecret }}
      key: {{ $ctx.Values.pageTokens.key }}
- name: PARCOURS_AUDIT_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $ctx.Values.audit.keys.existingSecret }}
      key: {{ $ctx.Values.audit.keys.key }}
{{- if $ctx.Values.audit.anchors.enabled }}
- name: PARCOURS_AUDIT_ANCHOR_DIR
  value: /var/lib/parcours/audit-anchors
- name: PARCOURS_AUDIT_ANCHOR_INTERVAL_SECONDS
  value: {{ $ctx.Values.audit.anchors.intervalSeconds | quote }}
{{- end }}
{{- end }}
{{- if $c.temporal }}
- name: PARCOURS_TEMPORAL_ADDRESS
  value: {{ $ctx.Values.temporal.address | quote }}
- name: PARCOURS_TEMPORAL_NAMESPACE
  value: {{ $ctx.Values.temporal.namespace | quote }}
- name: PARCOURS_PAYLOAD_KEYS
  valueFrom:
    secretKeyRef:
      name: {{ $ctx.Values.temporal.payloadKeys.existingSecret }}
      key: {{ $ctx.Values.temporal.payloadKeys.key }}
{{- end }}
{{- if $c.notifications }}
{{ include "parcours.notificationsEnv" $ctx }}
{{- else if $c.sendsMail }}
{{- include "parcours.smtpEnv" $ctx }}
{{- end }}
{{- if $c.joinLinks }}
{{ include "parcours.joinLinksEnv" $ctx }}
{{- end }}
{{- range $callee := $c.calls }}
{{- $target := get $components $callee }}
{{- if not $target }}
{{- fail (printf "components.%s.calls names %q, which is not an enabled component" $.name $callee) }}
{{- end }}
{{- if not $target.grpcPort }}
{{- fail (printf "components.%s.calls names %q, which has no grpcPort" $.name $callee) }}
{{- end }}
- name: PARCOURS_{{ $callee | upper | replace "-" "_" }}_ADDRESS
  value: {{ printf "%s:%d" (include "parcours.serviceHost" (dict "ctx" $ctx "part" $callee)) (int $target.grpcPort) | quote }}
{{- end }}
{{- if eq (toString $c.decisionSigning) "signer" }}
- name: PARCOURS_DECISION_SIGNING_CERT_FILE
  value: /etc/parcours/decision-signing/{{ $ctx.Values.decisionSigning.certificateKey }}
- name: PARCOURS_DECISION_SIGNING_KEY_FILE
  value: /etc/parcours/decision-signing/{{ $ctx.Values.decisionSigning.keyKey }}
{{- else if eq (toString $c.decisionSigning) "verifier" }}
- name: PARCOURS_DECISION_TRUST_ROOTS_FILE
  value: /etc/parcours/decision-signing/{{ $ctx.Values.decisionSigning.trustRootsKey }}
{{- end }}
{{ include "parcours.otelEnv" (dict "ctx" $ctx "part" .name) }}
{{- range $k, $v := $c.env }}
- name: {{ $k }}
  value: {{ $v | quote }}
{{- end }}
{{- range $c.secretEnv }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .key }}
{{- end }}
{{- end -}}

{{- define "parcours.component.deployment" -}}
{{- $ctx := .ctx -}}{{- $c := .c -}}{{- $v := $ctx.Values -}}
{{- $selector := dict "ctx" $ctx "part" .name -}}
{{- $env := include "parcours.component.env" . -}}
{{- $seen := dict -}}
{{- range (fromYamlArray $env) -}}
{{- if hasKey $seen .name -}}
{{- fail (printf "components.%s: %s is set twice; the chart sets it from its own values, remove it from env/secretEnv" $.name .name) -}}
{{- end -}}
{{- $_ := set $seen .name true -}}
{{- end -}}
{{- $notifyVolume := "" -}}
{{- if $c.notifications }}{{ $notifyVolume = include "parcours.notificationsVolume" $ctx }}
{{- else if $c.sendsMail }}{{ $notifyVolume = include "parcours.mailVolume" $ctx }}{{ end -}}
{{- $book := include "parcours.addressBook" $ctx | fromYaml -}}
{{- $autoscaling := default dict $c.autoscaling -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  {{- include "parcours.component.meta" . | nindent 2 }}
  annotations:
    {{- $noProbes := "" }}
    {{- if not (or $c.grpcPort $c.httpHealthPath) }}
    {{- $noProbes = "A Temporal worker serves no endpoint to probe (the kit gives workers no health listener yet); it exits on a fatal error and is restarted, and receives no traffic to gate" }}
    {{- end }}
    {{- include "parcours.checkovSkips" (dict "ctx" $ctx "secretEnv" true "noProbes" $noProbes) | nindent 4 }}
spec:
  {{- if not $autoscaling.enabled }}
  replicas: {{ $c.replicaCount | default 1 }}
  {{- end }}
  revisionHistoryLimit: 5
  selector:
    matchLabels:
      {{- include "parcours.selectorLabels" $selector | nindent 6 }}
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 1
  template:
    metadata:
      labels:
        {{- include "parcours.selectorLabels" $selector | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ $env | sha256sum }}
        {{- if and $c.notifications (eq $book.kind "inline") }}
        # The address book is read at start: a change of its inline entries rolls the pods.
        checksum/address-book: {{ include "parcours.addressBookJson" $ctx | sha256sum }}
        {{- end }}
        {{- with (merge (dict) (default dict $c.podAnnotations) $v.podAnnotations) }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "parcours.objectName" $selector }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      # Services: SIGTERM → NOT_SERVING → in-flight RPCs finish; workers: 20 s for running activities.
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds | default 30 }}
      {{- include "parcours.podScheduling" $ctx | nindent 6 }}
      {{- if $v.topologySpread.enabled }}
      topologySpreadConstraints:
        - maxSkew: {{ $v.topologySpread.zone.maxSkew }}
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: {{ $v.topologySpread.zone.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "parcours.selectorLabels" $selector | nindent 14 }}
          matchLabelKeys: [pod-template-hash]
        - maxSkew: {{ $v.topologySpread.node.maxSkew }}
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: {{ $v.topologySpread.node.whenUnsatisfiable }}
          labelSelector:
            matchLabels:
              {{- include "parcours.selectorLabels" $selector | nindent 14 }}
          matchLabelKeys: [pod-template-hash]
      {{- end }}
      containers:
        - name: {{ .name }}
          image: {{ include "parcours.image" $ctx }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command: ["python", "-m", {{ $c.module | quote }}]
          {{- if or $c.grpcPort $c.httpPort }}
          ports:
            {{- if $c.grpcPort }}
            - name: grpc
              containerPort: {{ $c.grpcPort }}
              protocol: TCP
            - name: health
              containerPort: {{ $v.healthPort }}
              protocol: TCP
            {{- end }}
            {{- if $c.httpPort }}
            - name: http
              containerPort: {{ $c.httpPort }}
              protocol: TCP
            {{- end }}
          {{- end }}
          env:
            {{- $env | nindent 12 }}
          {{- if $c.grpcPort }}
          # Native gRPC probes on the plaintext health-only listener (kubelet speaks no TLS). SERVING means the
          # database answers and every downstream channel is connected; start-up may drain an outbox first.
          startupProbe:
            grpc:
              port: {{ $v.healthPort }}
            periodSeconds: 2
            failureThreshold: 90
          readinessProbe:
            grpc:
              port: {{ $v.healthPort }}
            periodSeconds: 5
            timeoutSeconds: 2
            failureThreshold: 2
          # Liveness asks the kit's `liveness` health service, SERVING whatever the database says: a database
          # outage makes the pods unready, it does not restart them.
          livenessProbe:
            grpc:
              port: {{ $v.healthPort }}
              service: liveness
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 6
          {{- else if $c.httpHealthPath }}
          startupProbe:
            httpGet:
              path: {{ $c.httpHealthPath }}
              port: http
            periodSeconds: 2
            failureThreshold: 90
          readinessProbe:
            httpGet:
              path: {{ $c.httpReadyPath | default $c.httpHealthPath }}
              port: http
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          livenessProbe:
            httpGet:
              path: {{ $c.httpHealthPath }}
              port: http
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 6
          {{- end }}
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            - name: tls
              mountPath: /etc/parcours/tls
              readOnly: true
            - name: tokens
              mountPath: /etc/parcours/tokens
              readOnly: true
            {{- if and $c.grpcPort $v.audit.anchors.enabled }}
            # Where this pod anchors its audit chain's head (one file per pod), outside PostgreSQL.
            - name: audit-anchors
              mountPath: /var/lib/parcours/audit-anchors
            {{- end }}
            {{- if $c.decisionSigning }}
            - name: decision-signing
              mountPath: /etc/parcours/decision-signing
              readOnly: true
            {{- end }}
            {{- include "parcours.postgresqlCaMount" $ctx | nindent 12 }}
            {{- if $notifyVolume }}
            - name: notify
              mountPath: /etc/parcours/notify
              readOnly: true
            {{- end }}
      volumes:
        {{- include "parcours.tmpVolume" $ctx | nindent 8 }}
        - name: tls
          secret:
            secretName: {{ include "parcours.tlsSecretName" (dict "ctx" $ctx "name" .name "component" $c) }}
            defaultMode: 0440
            items:
              - {key: tls.crt, path: tls.crt}
              - {key: tls.key, path: tls.key}
              - {key: ca.crt, path: ca.crt}
        - name: tokens
          secret:
            secretName: {{ $v.tokens.jwks.existingSecret }}
            defaultMode: 0440
            items:
              - key: {{ $v.tokens.jwks.key }}
                path: {{ $v.tokens.jwks.key }}
        {{- if and $c.grpcPort $v.audit.anchors.enabled }}
        - name: audit-anchors
          persistentVolumeClaim:
            claimName: {{ $v.audit.anchors.existingClaim }}
        {{- end }}
        {{- if $c.decisionSigning }}
        # The signer gets the certificate and its key; a verifier the trust roots only, never the key.
        - name: decision-signing
          secret:
            secretName: {{ $v.decisionSigning.existingSecret }}
            defaultMode: 0440
            items:
              {{- if eq (toString $c.decisionSigning) "signer" }}
              - {key: {{ $v.decisionSigning.certificateKey }}, path: {{ $v.decisionSigning.certificateKey }}}
              - {key: {{ $v.decisionSigning.keyKey }}, path: {{ $v.decisionSigning.keyKey }}}
              {{- else }}
              - {key: {{ $v.decisionSigning.trustRootsKey }}, path: {{ $v.decisionSigning.trustRootsKey }}}
              {{- end }}
        {{- end }}
        {{- include "parcours.postgresqlCaVolume" $ctx | nindent 8 }}
        {{- with $notifyVolume }}
        {{- . | nindent 8 }}
        {{- end }}
{{- end -}}

{{- define "parcours.component.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  {{- include "parcours.component.meta" . | nindent 2 }}
# No component calls the Kubernetes API.
automountServiceAccountToken: false
{{- end -}}

{{- define "parcours.component.service" -}}
{{- $c := .c -}}
{{- $svc := default dict $c.service -}}
apiVersion: v1
kind: Service
metadata:
  {{- include "parcours.component.meta" . | nindent 2 }}
  {{- with $svc.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $svc.type | default "ClusterIP" }}
  {{- with $svc.loadBalancerSourceRanges }}
  loadBalancerSourceRanges:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    {{- include "parcours.selectorLabels" (dict "ctx" .ctx "part" .name) | nindent 4 }}
  ports:
    {{- if $c.grpcPort }}
    - name: grpc
      port: {{ $c.grpcPort }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: health
      port: {{ .ctx.Values.healthPort }}
      targetPort: health
      protocol: TCP
      appProtocol: grpc
    {{- end }}
    {{- if $c.httpPort }}
    - name: http
      port: {{ $c.httpPort }}
      targetPort: http
      protocol: TCP
      appProtocol: http
    {{- end }}
{{- end -}}

{{- define "parcours.component.pdb" -}}
{{- $pdb := default dict .c.pdb -}}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  {{- include "parcours.component.meta" . | nindent 2 }}
spec:
  {{- if hasKey $pdb "minAvailable" }}
  minAvailable: {{ $pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $pdb.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "parcours.selectorLabels" (dict "ctx" .ctx "part" .name) | nindent 6 }}
{{- end -}}

{{- define "parcours.component.hpa" -}}
{{- $a := .c.autoscaling -}}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  {{- include "parcours.component.meta" . | nindent 2 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "parcours.objectName" (dict "ctx" .ctx "part" .name) }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage | default 70 }}
    {{- with $a.backlog }}
    {{- if .enabled }}
    # The task queue's backlog (tasks waiting for a worker), served to the HPA by an external metrics adapter
    # from Temporal's own metrics; see docs/operations.md "Scaling the workers".
    - type: External
      external:
        metric:
          name: {{ .metricName }}
          selector:
            matchLabels:
              {{- toYaml (merge (dict "task_queue" $.c.taskQueue) (default dict .selector)) | nindent 14 }}
        target:
          type: AverageValue
          averageValue: {{ .targetPerReplica | quote }}
    {{- end }}
    {{- end }}
  behavior:
    scaleDown:
      # A worker scaled down waits for its running activities; no flapping.
      stabilizationWindowSeconds: 300
      policies:
        - type: Pods
          value: 1
          periodSeconds: 60
    scaleUp:
      stabilizationWindowSeconds: 30
      policies:
        - type: Pods
          value: 2
          periodSeconds: 60
{{- end -}}

{{/*
The component's own NetworkPolicy: ingress to its gRPC port from the components that call it (and the peers of
its networkPolicy.from), to its health port from this release's `helm test` pods, to its HTTP port from the
ingress controller; egress to the components it calls. DNS, PostgreSQL, Temporal and the collector are allowed
by the release-wide named policies (networkpolicies.yaml).
*/}}
{{- define "parcours.component.networkPolicy" -}}
{{- $ctx := .ctx -}}{{- $c := .c -}}{{- $name := .name -}}
{{- $components := include "parcours.components" $ctx | fromYaml -}}
{{- $callers := list -}}
{{- range $other, $oc := $components -}}
{{- if has $name (default list $oc.calls) -}}{{- $callers = append $callers $other -}}{{- end -}}
{{- end -}}
{{- $np := default dict $c.networkPolicy -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  {{- include "parcours.component.meta" . | nindent 2 }}
spec:
  podSelector:
    matchLabels:
      {{- include "parcours.selectorLabels" (dict "ctx" $ctx "part" $name) | nindent 6 }}
  policyTypes: [Ingress, Egress]
  {{- $rules := list }}
  {{- $external := default list $np.from }}
  {{- if $c.exposed }}{{- $external = concat (default list $ctx.Values.networkPolicy.clients) $external }}{{- end }}
  {{- if and $c.grpcPort (or $callers $external) }}
  {{- $from := list }}
  {{- if $callers }}
  {{- $from = append $from (dict "podSelector" (dict "matchExpressions" (list (dict "key" "app.kubernetes.io/instance" "operator" "In" "values" (list $ctx.Release.Name)) (dict "key" "app.kubernetes.io/component" "operator" "In" "values" (sortAlpha $callers))))) }}
  {{- end }}
  {{- range $external }}{{- $from = append $from . }}{{- end }}
  {{- $rules = append $rules (dict "ports" (list (dict "port" "grpc" "protocol" "TCP")) "from" $from) }}
  {{- end }}
  {{- if $c.grpcPort }}
  {{- $tests := include "parcours.selectorLabels" (dict "ctx" $ctx "part" "test") | fromYaml }}
  {{- $rules = append $rules (dict "ports" (list (dict "port" "health" "protocol" "TCP")) "from" (list (dict "podSelector" (dict "matchLabels" $tests)))) }}
  {{- end }}
  {{- if and $c.httpPort $ctx.Values.ingress.enabled (eq $ctx.Values.ingress.component $name) }}
  {{- $rule := dict "ports" (list (dict "port" "http" "protocol" "TCP")) }}
  {{- with $ctx.Values.ingress.from }}{{- $_ := set $rule "from" . }}{{- end }}
  {{- $rules = append $rules $rule }}
  {{- end }}
  ingress:
    {{- if $rules }}
    {{- toYaml $rules | nindent 4 }}
    {{- else }} []
    {{- end }}
  egress:
    {{- range $callee := sortAlpha (default list $c.calls) }}
    {{- $target := get $components $callee }}
    - ports:
        - port: {{ $target.grpcPort }}
          protocol: TCP
      to:
        - podSelector:
            matchLabels:
              {{- include "parcours.selectorLabels" (dict "ctx" $ctx "part" $callee) | nindent 14 }}
    {{- else }} []
    {{- end }}
{{- end -}}

{{/* cert-manager: the component's server+client certificate, CN parcours-<identity>, SANs its Service names */}}
{{- define "parcours.component.certificate" -}}
{{- $ctx := .ctx -}}{{- $cm := $ctx.Values.certManager -}}
{{- $svc := include "parcours.objectName" (dict "ctx" $ctx "part" .name) -}}
{{- $ns := $ctx.Release.Namespace -}}
apiVersion: cert-manager.io/v1
kind: Certificate
metadata:
  {{- include "parcours.component.meta" . | nindent 2 }}
spec:
  secretName: {{ include "parcours.tlsSecretName" (dict "ctx" $ctx "name" .name "component" .c) }}
  commonName: {{ printf "parcours-%s" (.c.identity | default .name) }}
  dnsNames:
    - {{ $svc }}
    - {{ $svc }}.{{ $ns }}
    - {{ $svc }}.{{ $ns }}.svc
    - {{ $svc }}.{{ $ns }}.svc.{{ $ctx.Values.clusterDomain }}
  duration: {{ $cm.duration }}
  renewBefore: {{ $cm.renewBefore }}
  privateKey:
    algorithm: ECDSA
    size: 256
    rotationPolicy: Always
  usages: [server auth, client auth, digital signature]
  issuerRef:
    {{- toYaml $cm.issuerRef | nindent 4 }}
{{- end -}}
