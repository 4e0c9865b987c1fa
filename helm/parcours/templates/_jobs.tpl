{{/* A hook Job running one command in the Parcours image; dict "ctx" $ "part" name "weight" w "command" list
"env" yaml "resources" r "deadline" seconds "scripts" bool "database" bool */}}
{{- define "parcours.hookJob" -}}
{{- $ctx := .ctx -}}{{- $v := $ctx.Values -}}
{{- $selector := dict "ctx" $ctx "part" .part -}}
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ include "parcours.objectName" $selector }}
  namespace: {{ $ctx.Release.Namespace }}
  labels:
    {{- include "parcours.labels" $selector | nindent 4 }}
  annotations:
    helm.sh/hook: pre-install,pre-upgrade
    helm.sh/hook-weight: {{ .weight | quote }}
    # A failed Job stays for `kubectl logs`; the next attempt replaces it.
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
    {{- include "parcours.checkovSkips" (dict "ctx" $ctx "secretEnv" .database "noProbes" "") | nindent 4 }}
spec:
  backoffLimit: 3
  activeDeadlineSeconds: {{ .deadline }}
  template:
    metadata:
      labels:
        {{- include "parcours.selectorLabels" $selector | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "parcours.objectName" (dict "ctx" $ctx "part" "hooks") }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      {{- with $v.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $v.podSecurityContext | nindent 8 }}
      {{- include "parcours.podScheduling" $ctx | nindent 6 }}
      containers:
        - name: {{ .part }}
          image: {{ include "parcours.image" $ctx }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          command: {{ toJson .command }}
          env:
            {{- .env | nindent 12 }}
          resources:
            {{- toYaml .resources | nindent 12 }}
          securityContext:
            {{- toYaml $v.securityContext | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if .scripts }}
            - name: scripts
              mountPath: /etc/parcours/scripts
              readOnly: true
            {{- end }}
            {{- if .database }}
            {{- include "parcours.postgresqlCaMount" $ctx | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "parcours.tmpVolume" $ctx | nindent 8 }}
        {{- if .scripts }}
        - name: scripts
          configMap:
            name: {{ include "parcours.objectName" (dict "ctx" $ctx "part" "scripts") }}
            defaultMode: 0444
        {{- end }}
        {{- if .database }}
        {{- include "parcours.postgresqlCaVolume" $ctx | nindent 8 }}
        {{- end }}
{{- end -}}
