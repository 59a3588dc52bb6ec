{{/* The chart name, truncated to 63 characters (the DNS label limit). */}}
{{- define "lookalike.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The full name: release-prefixed unless the release name already contains the chart name. */}}
{{- define "lookalike.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A component's resource name, <fullname>-<component>: the full name is cut so the whole stays
within 63 characters and the component suffix survives (names of components never collide).
*/}}
{{- define "lookalike.componentName" -}}
{{- $room := sub 62 (len .component) | int -}}
{{- printf "%s-%s" (include "lookalike.fullname" .root | trunc $room | trimSuffix "-") .component -}}
{{- end -}}

{{- define "lookalike.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels shared by every resource. */}}
{{- define "lookalike.labels" -}}
helm.sh/chart: {{ include "lookalike.chart" . }}
{{ include "lookalike.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: lookalike
{{- end -}}

{{- define "lookalike.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lookalike.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: call with (dict "root" $ "component" "api"). */}}
{{- define "lookalike.componentLabels" -}}
{{ include "lookalike.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lookalike.componentSelectorLabels" -}}
{{ include "lookalike.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lookalike.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lookalike.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lookalike.secretName" -}}
{{- default (include "lookalike.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* An image reference; the tag defaults to appVersion plus a suffix ("-cuda" on GPU images). */}}
{{- define "lookalike.image" -}}
{{- $suffix := ternary "-cuda" "" (and (hasKey .values "gpu") (gt (int .values.gpu) 0)) -}}
{{- printf "%s:%s" .values.image.repository (default (printf "%s%s" .root.Chart.AppVersion $suffix) .values.image.tag) -}}
{{- end -}}

{{/* Resources plus the GPU request: call with (dict "values" .Values.embedder). */}}
{{- define "lookalike.resources" -}}
{{- $resources := deepCopy (default dict .values.resources) -}}
{{- if gt (int .values.gpu) 0 -}}
{{- $limits := merge (default dict $resources.limits) (dict "nvidia.com/gpu" (int .values.gpu)) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}

{{/* The environment every Lookalike container reads: the ConfigMap and the Secret. */}}
{{- define "lookalike.envFrom" -}}
- configMapRef:
    name: {{ include "lookalike.fullname" . }}
- secretRef:
    name: {{ include "lookalike.secretName" . }}
{{- end -}}

{{/*
The name a dependency's chart gives its Service: <release>-<chart>, or the release name alone
when it already contains the chart's name (the zilliztech/milvus and MinIO charts both do this).
*/}}
{{- define "lookalike.dependencyName" -}}
{{- if contains .chart .root.Release.Name -}}
{{- .root.Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .root.Release.Name .chart | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Milvus's address: the proxy installed with the release, or milvus.uri. */}}
{{- define "lookalike.milvusUri" -}}
{{- if .Values.milvus.enabled -}}
{{- printf "http://%s:19530" (include "lookalike.dependencyName" (dict "root" . "chart" "milvus")) -}}
{{- else -}}
{{- required "milvus.uri is required (a Milvus standalone or cluster proxy), or set milvus.enabled" .Values.milvus.uri -}}
{{- end -}}
{{- end -}}

{{/*
The blob store's host:port: MinIO installed with the release, or blobs.endpoint. With MinIO in
the release, its root credentials must be the ones the pods use.
*/}}
{{- define "lookalike.blobEndpoint" -}}
{{- if .Values.minio.enabled -}}
{{- if not .Values.secrets.existingSecret -}}
{{- if or (ne .Values.minio.rootUser .Values.secrets.blobAccessKey) (ne .Values.minio.rootPassword .Values.secrets.blobSecretKey) -}}
{{- fail "minio.enabled: set minio.rootUser and minio.rootPassword to secrets.blobAccessKey and secrets.blobSecretKey" -}}
{{- end -}}
{{- end -}}
{{- printf "%s:9000" (include "lookalike.dependencyName" (dict "root" . "chart" "minio")) -}}
{{- else -}}
{{- required "blobs.endpoint is required (host:port), or set minio.enabled" .Values.blobs.endpoint -}}
{{- end -}}
{{- end -}}
