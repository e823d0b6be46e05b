// latchkey's one script: runs the passkey (WebAuthn) ceremony a page describes and posts the
// browser's answer with the page's form, and moves the sign-in page on by itself once the
// companion app confirmed its QR code. Pages work without it for passwords and codes.
//
// A ceremony is a <form data-passkey="create|get"> holding hidden fields `ticket` and
// `credential`, the options as JSON in <script type="application/json" id="{form id}-options">,
// a <button data-passkey-start> and a <p data-passkey-error role="alert">. A sign-in form with
// data-passkey-autofill also offers its passkeys in the user name field's autofill
// (conditional mediation).
//
// The login QR code is a <form data-qr-events="URL"> holding <img id="login-qr"> and
// <p id="qr-status">: once the image has loaded (it makes the browser session), the page
// watches URL (Server-Sent Events of family A's LoginStatus) and posts the form when the app
// has logged in.
(function () {
  "use strict";

  function decode(text) {
    var b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) b64 += "=";
    var raw = atob(b64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes.buffer;
  }

  function encode(buffer) {
    var bytes = new Uint8Array(buffer);
    var raw = "";
    for (var i = 0; i < bytes.length; i++) raw += String.fromCharCode(bytes[i]);
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function creationOptions(o) {
    o.challenge = decode(o.challenge);
    o.user.id = decode(o.user.id);
    (o.excludeCredentials || []).forEach(function (c) { c.id = decode(c.id); });
    return o;
  }

  function requestOptions(o) {
    o.challenge = decode(o.challenge);
    (o.allowCredentials || []).forEach(function (c) { c.id = decode(c.id); });
    return o;
  }

  function answer(credential) {
    var r = credential.response;
    var response = { clientDataJSON: encode(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = encode(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = encode(r.authenticatorData);
      response.signature = encode(r.signature);
      response.userHandle = r.userHandle ? encode(r.userHandle) : null;
    }
    return JSON.stringify({
      id: credential.id,
      rawId: encode(credential.rawId),
      type: credential.type,
      response: response,
      extensions: {},
    });
  }

  function ceremony(form) {
    var mode = form.getAttribute("data-passkey");
    var button = form.querySelector("[data-passkey-start]");
    var error = form.querySelector("[data-passkey-error]");
    var source = document.getElementById(form.id + "-options");
    if (!window.PublicKeyCredential || !source || !button) return;
    var options = function () { return JSON.parse(source.textContent); };
    var autofill = form.hasAttribute("data-passkey-autofill") &&
      PublicKeyCredential.isConditionalMediationAvailable;
    // The autofill request waiting in the user name field, and whether the button's is open.
    var waiting = null;
    var modal = false;

    function send(credential) {
      form.querySelector("input[name=credential]").value = answer(credential);
      form.submit();
    }

    function offerInAutofill() {
      if (!autofill || modal || waiting) return;
      PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
        if (!available || modal || waiting) return;
        var controller = new AbortController();
        waiting = controller;
        navigator.credentials
          .get({ publicKey: requestOptions(options()), mediation: "conditional",
                 signal: controller.signal })
          .then(send, function () { if (waiting === controller) waiting = null; });
      });
    }

    function fail(e) {
      modal = false;
      error.textContent = mode === "create"
        ? "No passkey was made (" + (e && e.name || "error") + "). Try again."
        : "No passkey was used (" + (e && e.name || "error") + "). Try again, or use your password.";
      error.hidden = false;
      button.disabled = false;
      offerInAutofill();
    }

    button.hidden = false;
    button.addEventListener("click", function () {
      if (waiting) { waiting.abort(); waiting = null; }
      modal = true;
      error.hidden = true;
      button.disabled = true;
      var call = mode === "create"
        ? navigator.credentials.create({ publicKey: creationOptions(options()) })
        : navigator.credentials.get({ publicKey: requestOptions(options()) });
      call.then(send, fail);
    });
    offerInAutofill();
  }

  function qrSignIn(form) {
    var url = form.getAttribute("data-qr-events");
    var image = document.getElementById("login-qr");
    var status = document.getElementById("qr-status");
    if (!window.EventSource || !url || !image || !status) return;
    var watching = false;
    function watch() {
      if (watching) return;
      watching = true;
      var events = new EventSource(url);
      events.addEventListener("status", function (e) {
        var status = JSON.parse(e.data);
        // A login by an app account linked to nobody signs nobody in: the page waits.
        if (!status.loggedin || !status.userid) return;
        events.close();
        status.textContent = "Confirmed in the app: signing you in…";
        form.submit();
      });
    }
    if (image.complete && image.naturalWidth) watch();
    else image.addEventListener("load", watch);
    // A code's challenge lives two minutes and is renewed once expired: fetching the current
    // one every 20 s shows an expired code for 20 s at most.
    setInterval(function () { image.src = "/login/qr.png?t=" + Date.now(); }, 20000);
  }

  document.querySelectorAll("form[data-passkey]").forEach(ceremony);
  document.querySelectorAll("form[data-qr-events]").forEach(qrSignIn);
})();
