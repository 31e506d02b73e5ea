// Package notify announces rollout events to webhooks: approval needed,
// started, paused, failed, rolled back, aborted, succeeded, validation
// needed.
//
// Each event is POSTed as JSON ([Body]) with a Slack-compatible "text"
// field, so a Slack or Mattermost incoming webhook shows a readable line
// and other receivers get structured fields.
//
// Notifications never hold up a rollout: [Notifier.Notify] only queues
// and never blocks; failures are logged, never returned. Each webhook URL
// has its own queue and worker, so events reach one receiver in the order
// they happened and a dead receiver delays only its own events. A 2xx
// answer is delivery; 5xx, 429 and network errors are retried with
// jittered exponential backoff (honouring Retry-After); other 4xx answers
// are not retried. A full queue drops its oldest event.
//
// Webhook URLs often carry a secret token (Slack puts it in the path), so
// a URL is never logged whole: logs name its scheme and host only.
package notify
