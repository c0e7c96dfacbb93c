/* Map a configured service to its implementation. */
#include "config.h"

#include "conn.h"
#include "service.h"

const struct conn_service *
service_ops(enum service_kind kind)
{
	switch (kind) {
	case SERVICE_ECHO:
		return &echo_service;
	case SERVICE_CHAT:
		return &chat_service;
	case SERVICE_METRICS:
		break;
	}
	return &echo_service;
}
