{{/*
A Deployment and Service serving the Lookalike gRPC server (`lookalike serve`), shared by the
embedder and the API. Call with (dict "root" $ "component" "api" "values" .Values.api "env" list).
*/}}
{{- define "lookalike.grpcServer" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $name := include "lookalike.componentName" . -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  labels:
    {{- include "lookalike.componentLabels" . | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "lookalike.componentSelectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "lookalike.componentLabels" . | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "lookalike.serviceAccountName" $root }}
      automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "lookalike.image" (dict "root" $root "values" $v) | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          args: ["serve"]
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          envFrom:
            {{- include "lookalike.envFrom" $root | nindent 12 }}
          env:
            - name: LOOKALIKE_SERVER__PORT
              value: {{ $v.service.port | quote }}
            - name: LOOKALIKE_SERVER__METRICS_PORT
              value: {{ $v.metricsPort | quote }}
            - name: LOOKALIKE_MODEL__DEVICE
              value: {{ $v.device | quote }}
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            - name: grpc
              containerPort: {{ $v.service.port }}
              protocol: TCP
            {{- if gt (int $v.metricsPort) 0 }}
            - name: metrics
              containerPort: {{ $v.metricsPort }}
              protocol: TCP
            {{- end }}
          startupProbe:
            grpc:
              port: {{ $v.service.port }}
            {{- toYaml $v.probes.startup | nindent 12 }}
          livenessProbe:
            grpc:
              port: {{ $v.service.port }}
            {{- toYaml $v.probes.liveness | nindent 12 }}
          readinessProbe:
            grpc:
              port: {{ $v.service.port }}
            {{- toYaml $v.probes.readiness | nindent 12 }}
          resources:
            {{- include "lookalike.resources" (dict "values" $v) | nindent 12 }}
          volumeMounts:
            - name: data
              mountPath: {{ $root.Values.settings.dataDir }}
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: data
          {{- if and (hasKey $v "modelCache") $v.modelCache.enabled }}
          persistentVolumeClaim:
            claimName: {{ default $name $v.modelCache.existingClaim }}
          {{- else }}
          emptyDir: {}
          {{- end }}
        - name: tmp
          emptyDir: {}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  labels:
    {{- include "lookalike.componentLabels" . | nindent 4 }}
spec:
  type: {{ $v.service.type }}
  selector:
    {{- include "lookalike.componentSelectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $v.service.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    {{- if gt (int $v.metricsPort) 0 }}
    - name: metrics
      port: {{ $v.metricsPort }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- end -}}
