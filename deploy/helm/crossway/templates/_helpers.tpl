{{/* The chart's name. */}}
{{- define "crossway.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name, with the chart's unless it contains it. */}}
{{- define "crossway.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "crossway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "crossway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector of the gateway's pods. */}}
{{- define "crossway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crossway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end -}}

{{/* Selector of the Redis pod. */}}
{{- define "crossway.redisSelectorLabels" -}}
app.kubernetes.io/name: {{ include "crossway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: redis
{{- end -}}

{{/* The Secret with admin-token and openai-api-key. */}}
{{- define "crossway.secretName" -}}
{{- default (include "crossway.fullname" .) .Values.secret.name -}}
{{- end -}}

{{/* REDIS_URL: the chart's Redis, else externalRedis.url (one of them is required). */}}
{{- define "crossway.redisUrl" -}}
{{- if .Values.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "crossway.fullname" .) -}}
{{- else -}}
{{- required "set redis.enabled=true or externalRedis.url: the replicas share keys, budgets and limits through Redis" .Values.externalRedis.url -}}
{{- end -}}
{{- end -}}

{{/* The config file's text. */}}
{{- define "crossway.config" -}}
{{- if .Values.config -}}
{{- .Values.config -}}
{{- else -}}
{{- .Files.Get "files/crossway.yaml" -}}
{{- end -}}
{{- end -}}
