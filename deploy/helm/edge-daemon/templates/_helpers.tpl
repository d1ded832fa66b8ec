{{/* Names, labels and the per-class settings shared by the templates. */}}

{{- define "edge-daemon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "edge-daemon.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else if contains (include "edge-daemon.name" .) .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "edge-daemon.name" .) | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "edge-daemon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "edge-daemon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "edge-daemon.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "edge-daemon.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "edge-daemon.secretName" -}}
{{- if .Values.secret.existingSecret -}}
{{- .Values.secret.existingSecret -}}
{{- else -}}
{{- include "edge-daemon.fullname" . -}}
{{- end -}}
{{- end -}}

{{/*
A setting's value as an environment string: lists comma-joined, whole numbers without an exponent
(YAML numbers reach templates as float64, and 20971520 would otherwise print as 2.097152e+07).
*/}}
{{- define "edge-daemon.settingValue" -}}
{{- $v := . -}}
{{- if kindIs "slice" $v -}}
{{- join "," $v -}}
{{- else if and (kindIs "float64" $v) (eq $v (floor $v)) -}}
{{- $v | int64 -}}
{{- else -}}
{{- $v | toString -}}
{{- end -}}
{{- end -}}

{{/* Settings the chart owns: they tie the pod spec together (port, volumes) or belong in the Secret. */}}
{{- define "edge-daemon.reservedSettings" -}}
host port models_dir cache_dir state_dir preload api_key access_keys access_keys_file
{{- end -}}

{{/* What the pull init containers and the daemon container share: settings, keys, hardening, volumes. */}}
{{- define "edge-daemon.containerCommon" }}
          imagePullPolicy: {{ .root.Values.image.pullPolicy }}
          envFrom:
            - configMapRef:
                name: {{ .fullname }}-{{ .class }}
          {{- if or .useSecret .streams }}
          env:
          {{- end }}
          {{- if .streams }}
            # The node this pod runs on: the daemon's args name its streams file after it.
            - name: NODE_NAME
              valueFrom:
                fieldRef: {fieldPath: spec.nodeName}
          {{- end }}
          {{- if .useSecret }}
            - name: EDGE_DAEMON_API_KEY
              valueFrom:
                secretKeyRef: {name: {{ .secretName }}, key: api-key, optional: true}
            - name: EDGE_DAEMON_ACCESS_KEYS
              valueFrom:
                secretKeyRef: {name: {{ .secretName }}, key: access-keys, optional: true}
          {{- end }}
          securityContext:
            allowPrivilegeEscalation: false
            privileged: false
            readOnlyRootFilesystem: true
            runAsNonRoot: true
            capabilities:
              drop: [ALL]
          volumeMounts:
            - {name: cache, mountPath: /var/cache/edge-daemon}
            - {name: models, mountPath: /var/lib/edge-daemon/models}
            - {name: tmp, mountPath: /tmp}
{{- end -}}

{{/* ---- Camera streams per node (streams.byNode / streams.existingSecret) ---- */}}

{{- define "edge-daemon.streamsEnabled" -}}
{{- if or .Values.streams.byNode .Values.streams.existingSecret }}true{{ end -}}
{{- end -}}

{{- define "edge-daemon.streamsSecretName" -}}
{{- .Values.streams.existingSecret | default (printf "%s-streams" (include "edge-daemon.fullname" .)) -}}
{{- end -}}

{{/*
One TOML value. Helm reads every YAML number as float64: whole numbers are written as integers, since the
daemon's stream fields are strict (qos = 1.0 is not an integer there). Strings are JSON-quoted, which TOML's
basic strings read the same way.
*/}}
{{- define "edge-daemon.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- $v -}}
{{- else if kindIs "float64" $v -}}
{{- if eq $v (floor $v) }}{{ $v | int64 }}{{ else }}{{ $v }}{{ end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- $v -}}
{{- else if kindIs "slice" $v -}}
[{{ range $i, $item := $v }}{{ if $i }}, {{ end }}{{ include "edge-daemon.tomlValue" $item }}{{ end }}]
{{- else if kindIs "map" $v -}}
{{- $pairs := list -}}
{{- range $key, $item := $v }}{{ if not (kindIs "invalid" $item) }}
{{- $pairs = append $pairs (printf "%s = %s" (include "edge-daemon.tomlKey" $key) (include "edge-daemon.tomlValue" $item)) }}
{{- end }}{{ end -}}
{{ "{" }}{{ if $pairs }} {{ join ", " $pairs }} {{ end }}{{ "}" }}
{{- else -}}
{{- fail (printf "streams: cannot write %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{- define "edge-daemon.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end -}}
{{- end -}}

{{/* A node's `--streams-file`: one [[streams]] table per stream (the daemon validates every field). */}}
{{- define "edge-daemon.streamsToml" -}}
{{- range $index, $stream := . }}
{{- if not (kindIs "map" $stream) }}{{ fail "streams.byNode: each stream must be a mapping (id, source, model_id, ...)" }}{{ end }}
{{- if $index }}{{ "\n" }}{{ end }}
[[streams]]
{{- range $key, $item := $stream }}
{{- if not (kindIs "invalid" $item) }}
{{ include "edge-daemon.tomlKey" $key }} = {{ include "edge-daemon.tomlValue" $item }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
